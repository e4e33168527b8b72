#!/usr/bin/env bash
# Keyline demo on embedded defaults: a fresh CA, certificates issued for CSRs
# made on the fly, every certificate checked with openssl, a revocation and a
# CRL, then a summary. Leaves its state in ./demo-state for a look around.
set -euo pipefail
BIN=${1:?usage: demo.sh BIN_DIR}
KEYLINE="$BIN/keyline"
DEMO=${KEYLINE_DEMO_DIR:-$PWD/demo-state}
export KEYLINE_LOG=${KEYLINE_LOG:-error}
# Every state-changing command names its operator on the audit trail.
export KEYLINE_OPERATOR=${KEYLINE_OPERATOR:-demo-operator}

rm -rf "$DEMO"
mkdir -p "$DEMO/csr" "$DEMO/issued"
STATE="$DEMO/station"
say() { printf '\n== %s\n' "$*"; }

say "1. Create the station CA (root + intermediate, development key store)"
"$KEYLINE" --state "$STATE" ca init --station-id demo-station \
  --root-subject "CN=Demo Root CA,O=Keyline Demo" --intermediate-subject "CN=Demo Line 1 CA,O=Keyline Demo"

say "2. Devices make key pairs and CSRs (EC P-256, EC P-384, RSA-2048)"
make_csr() {  # name keyopts...
  local name=$1; shift
  openssl req -new -nodes "$@" -keyout "$DEMO/csr/$name.key" -subj "/CN=$name" -out "$DEMO/csr/$name.csr" 2>/dev/null
  echo "   $name.csr"
}
make_csr sensor-0001 -newkey ec -pkeyopt ec_paramgen_curve:P-256
make_csr sensor-0002 -newkey ec -pkeyopt ec_paramgen_curve:P-256
make_csr gateway-0001 -newkey ec -pkeyopt ec_paramgen_curve:P-384
make_csr meter-0001 -newkey rsa:2048

say "3. Issue a certificate for each CSR"
for csr in "$DEMO"/csr/*.csr; do
  name=$(basename "$csr" .csr)
  "$KEYLINE" --state "$STATE" ca issue --csr "$csr" --out "$DEMO/issued/$name.pem"
done
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$DEMO/csr/idev.key" \
  -subj "/CN=board-7731" -out "$DEMO/csr/idev.csr" 2>/dev/null
"$KEYLINE" --state "$STATE" ca issue --csr "$DEMO/csr/idev.csr" --profile idevid \
  --device-serial SN-7731 --out "$DEMO/issued/board-7731.pem"

say "4. Verify every certificate independently with openssl verify -x509_strict"
for pem in "$DEMO"/issued/*.pem; do
  openssl verify -x509_strict -CAfile "$STATE/root.pem" -untrusted "$STATE/intermediate.pem" "$pem" | sed 's/^/   /'
done

say "5. A policy refusal: a second certificate for sensor-0001 without --reissue"
if "$KEYLINE" --state "$STATE" ca issue --csr "$DEMO/csr/sensor-0001.csr" --out "$DEMO/issued/dup.pem"; then
  echo "   unexpected: duplicate accepted" >&2; exit 1
else
  echo "   refused with exit code $? (as it should be)"
fi

say "6. Revoke sensor-0002 and publish a CRL"
serial=$(openssl x509 -in "$DEMO/issued/sensor-0002.pem" -noout -serial | cut -d= -f2)
"$KEYLINE" --state "$STATE" ca revoke --serial "$serial" --reason keyCompromise
"$KEYLINE" --state "$STATE" ca crl --out "$DEMO/crl.pem"
openssl crl -in "$DEMO/crl.pem" -CAfile "$STATE/chain.pem" -noout -verify 2>&1 | sed 's/^/   CRL signature: /'
if openssl verify -crl_check -CRLfile "$DEMO/crl.pem" -CAfile "$STATE/root.pem" \
     -untrusted "$STATE/intermediate.pem" "$DEMO/issued/sensor-0002.pem" >/dev/null 2>&1; then
  echo "   unexpected: revoked certificate still verifies" >&2; exit 1
else
  echo "   openssl verify -crl_check: sensor-0002 is revoked"
fi

say "7. Batch: pre-issue identities for a production run (station-generated keys, encrypted to the programmer)"
openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -keyout "$DEMO/programmer.key" \
  -subj "/CN=Demo Programming System" -days 30 -out "$DEMO/programmer.pem" 2>/dev/null
"$KEYLINE" --state "$STATE" ca batch --generate --count 2000 --id-template 'sn-{seq:06}' \
  --out "$DEMO/batch" --encrypt-keys-to "$DEMO/programmer.pem"
echo "   manifest lines: $(wc -l < "$DEMO/batch/manifest.jsonl"), first: $(head -c 120 "$DEMO/batch/manifest.jsonl")..."
openssl verify -x509_strict -CAfile "$STATE/root.pem" -untrusted "$DEMO/batch/chain.pem" "$DEMO/batch/sn-000001.pem" | sed 's/^/   /'
openssl cms -decrypt -inform DER -in "$DEMO/batch/sn-000001.key.p7m" -recip "$DEMO/programmer.pem" \
  -inkey "$DEMO/programmer.key" | openssl pkey -pubout | cmp -s - <(openssl x509 -in "$DEMO/batch/sn-000001.pem" -noout -pubkey) \
  && echo "   sn-000001: the decrypted key matches its certificate"
echo "   re-running the same command finds everything done:"
"$KEYLINE" --state "$STATE" ca batch --generate --count 2000 --id-template 'sn-{seq:06}' \
  --out "$DEMO/batch" --encrypt-keys-to "$DEMO/programmer.pem" | sed 's/^/   /'

say "8. Audit: export the tamper-evident trail, verify it (also with openssl), then catch an edit"
"$KEYLINE" --state "$STATE" audit export --format jsonl --out "$DEMO/audit.jsonl" | sed 's/^/   /'
"$KEYLINE" --state "$STATE" audit verify "$DEMO/audit.jsonl" | sed 's/^/   /'
openssl x509 -in "$STATE/audit.pem" -noout -pubkey > "$DEMO/audit-pub.pem"
openssl dgst -sha256 -verify "$DEMO/audit-pub.pem" -signature "$DEMO/audit.jsonl.manifest.json.sig" \
  "$DEMO/audit.jsonl.manifest.json" | sed 's/^/   manifest signature (openssl): /'
"$KEYLINE" --state "$STATE" audit verify --ledger | sed 's/^/   ledger: /'
cp "$DEMO/audit.jsonl" "$DEMO/audit-edited.jsonl"
cp "$DEMO/audit.jsonl.manifest.json" "$DEMO/audit-edited.jsonl.manifest.json"
cp "$DEMO/audit.jsonl.manifest.json.sig" "$DEMO/audit-edited.jsonl.manifest.json.sig"
sed -i '5s/demo-operator/someone-else/' "$DEMO/audit-edited.jsonl"
if "$KEYLINE" --state "$STATE" audit verify "$DEMO/audit-edited.jsonl" 2>"$DEMO/verify.err"; then
  echo "   unexpected: an edited export verified" >&2; exit 1
else
  echo "   edited export refused with exit code $?: $(cat "$DEMO/verify.err")"
fi
"$KEYLINE" --state "$STATE" report devices --format csv --out "$DEMO/devices.csv" 2>/dev/null
echo "   device report: $(($(wc -l < "$DEMO/devices.csv") - 1)) devices in $DEMO/devices.csv"

say "9. The DPS instance as code: ARM, Bicep, Terraform and enrollment groups from keyline.toml"
cat >> "$STATE/keyline.toml" <<'TOML'

[dps.instance]
name = "keyline-demo-dps"
location = "westeurope"
allocation-policy = "Hashed"
ca-certificates = ["intermediate"]
tags = { purpose = "keyline demo" }

[[dps.instance.hubs]]
host-name = "demo-hub-1.azure-devices.net"
location = "westeurope"
allocation-weight = 2
connection-string-parameter = "hub1ConnectionString"

[[dps.instance.hubs]]
host-name = "demo-hub-2.azure-devices.net"
location = "northeurope"
connection-string-parameter = "hub2ConnectionString"

[[dps.groups]]
name = "demo-line1"
attestation = "x509-ca"
initial-twin-tags = { line = "1" }
TOML
"$KEYLINE" --state "$STATE" dps infra --format all --out "$DEMO/infra" | sed 's/^/   /'
SCHEMAS="$(cd "$(dirname "$0")/.." && pwd)/../shared/arm-schemas"
if [ -d "$SCHEMAS" ] && /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
  /usr/bin/python3 "$(dirname "$0")/../tests/infra/validate_arm.py" "$SCHEMAS" "$DEMO/infra/arm/azuredeploy.json" \
    | sed 's/^/   ARM template against Microsoft'"'"'s schemas: /'
fi
bash -n "$DEMO/infra/enrollment-groups/enrollment-groups.sh" && echo "   enrollment-groups.sh: bash -n ok"

say "10. Provision a simulated line: devices on ptys in mixed modes and one on emulated USB"
SIMS=()
stop_sims() { for p in "${SIMS[@]}"; do kill "$p" 2>/dev/null || true; done; SIMS=(); }
stop_all() {
  stop_sims; kill "${EMU_PID:-}" 2>/dev/null || true
  [ -z "${TPM_PID:-}" ] || kill "$TPM_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop_all EXIT
# The DPS emulator, started from the ARM template of step 9, is this line's DPS.
EMU_OUT="$DEMO/dps-emulator.out"
"$BIN/keyline-dps-emulator" --state "$DEMO/dps-emulator" --from-template "$DEMO/infra/arm/azuredeploy.json" \
  >"$EMU_OUT" 2>"$DEMO/dps-emulator.err" &
EMU_PID=$!
stop_emulator() { kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null || true; }
for _ in $(seq 100); do [ -s "$EMU_OUT" ] && break; sleep 0.1; done
EMU_INFO=$(head -n1 "$EMU_OUT")
[ -n "$EMU_INFO" ] || { echo "   the emulator did not start: $(cat "$DEMO/dps-emulator.err")" >&2; exit 1; }
emu() { /usr/bin/python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(", ".join(v) if isinstance(v, list) else v)' "$EMU_INFO" "$1"; }
head -c 32 /dev/urandom | base64 > "$DEMO/line-group.key"
"$KEYLINE" --state "$STATE" hsm secret import --label line-group --from "$DEMO/line-group.key" >/dev/null
printf '%s\n' "$(head -c 32 /dev/urandom | base64)" | "$KEYLINE" --state "$STATE" hsm secret import --label line-master >/dev/null
cat >> "$STATE/keyline.toml" <<TOML

[provision]
mode = "x509-device-key"
registration_id_template = "{model}-{serial}"
group_key = "hsm:line-group"
individual_key = "hsm:line-master"
id_scope = "$(emu id_scope)"
TOML
start_sim() {  # name kind [VID:PID] args...
  local name=$1 kind=$2; shift 2
  local pre=(); [ "$kind" = usb ] && pre=(env LD_PRELOAD=libumockdev-preload.so.0)
  "${pre[@]}" "$BIN/keyline-devsim" --state "$DEMO/$name.json" "--$kind" "$@" > "$DEMO/$name.sim" 2>/dev/null &
  SIMS+=($!)
  for _ in $(seq 50); do grep -q "^$kind: " "$DEMO/$name.sim" 2>/dev/null && break; sleep 0.1; done
}
start_sim dev1 pty --serial-number A0001 --model sensor
start_sim dev2 pty --serial-number A0002 --model sensor
start_sim dev3 pty --serial-number B0001 --model valve
start_sim dev4 pty --serial-number C0001 --model meter
port() { sed -n 's/^pty: //p' "$DEMO/$1.sim"; }
PORTS=(--port "$(port dev1)" --port "$(port dev2),mode=x509-station-key" --port "$(port dev3),mode=symmetric-group"
       --port "$(port dev4),mode=symmetric-individual")
# dev6 has a TPM (swtpm): provisioned in tpm mode (GET_EK), it registers later by TPM attestation.
TPM_SOCK="$DEMO/swtpm/s"
if command -v swtpm >/dev/null; then
  mkdir -p "$DEMO/swtpm"
  swtpm socket --tpm2 --server "type=unixio,path=$TPM_SOCK" --ctrl "type=unixio,path=$TPM_SOCK.ctrl" \
    --flags not-need-init,startup-clear --tpmstate "dir=$DEMO/swtpm" --log "file=$DEMO/swtpm/log" &
  TPM_PID=$!
  for _ in $(seq 50); do [ -S "$TPM_SOCK" ] && break; sleep 0.1; done
  start_sim dev6 pty --serial-number T0001 --model meter --tpm "swtpm:path=$TPM_SOCK"
  PORTS+=(--port "$(port dev6),mode=tpm")
fi
USB_ENV=()
if [ -e /usr/lib/x86_64-linux-gnu/libumockdev-preload.so.0 ] || ldconfig -p | grep -q libumockdev-preload; then
  start_sim dev5 usb 1209:0001 --serial-number U0001 --model gateway
  UDIR=$(sed -n 's/^umockdev-dir: //p' "$DEMO/dev5.sim")
  if [ -n "$UDIR" ]; then
    USB_ENV=(env LD_PRELOAD=libumockdev-preload.so.0 UMOCKDEV_DIR="$UDIR")
    PORTS+=(--usb 1209:0001)
  fi
fi
"${USB_ENV[@]}" "$KEYLINE" --state "$STATE" line run --once "${PORTS[@]}" || true
echo
"$KEYLINE" --state "$STATE" device list
LEAF="$DEMO/dev1-leaf.pem"
"$BIN/keyline-devsim" --state "$DEMO/dev1.json" --show \
  | /usr/bin/python3 -c 'import json,sys; c=json.load(sys.stdin)["slots"]["cert-chain"]; e="-----END CERTIFICATE-----"; print(c[:c.index(e)+len(e)])' > "$LEAF"
openssl verify -CAfile "$STATE/root.pem" -untrusted "$STATE/intermediate.pem" "$LEAF" | sed 's/^/   device sensor-a0001: /'
stop_sims

say "11. DPS: the line's enrollments and the groups synced to the emulator; the devices register with what Keyline wrote"
echo "   linked hubs (from the template): $(emu hubs)"
# The station's [dps] settings for this emulator, in a configuration of their own.
export KEYLINE_DEMO_DPS_CS=$(emu service_connection_string)
cp "$STATE/keyline.toml" "$DEMO/dps-emulator.toml"
cat >> "$DEMO/dps-emulator.toml" <<TOML

[dps]
connection-string-source = "env:KEYLINE_DEMO_DPS_CS"
id-scope = "$(emu id_scope)"
ca-file = "$(emu ca_cert)"
TOML
"$KEYLINE" --state "$STATE" --config "$DEMO/dps-emulator.toml" dps group create demo-line1 --x509-ca intermediate \
  | sed 's/^/   /'
"$KEYLINE" --state "$STATE" --config "$DEMO/dps-emulator.toml" dps group create line-sym \
  --symmetric-key-source "file:$DEMO/line-group.key" | sed 's/^/   /'
"$KEYLINE" --state "$STATE" --config "$DEMO/dps-emulator.toml" dps sync --once | sed 's/^/   /'
for dev in dev1 dev2 dev3 dev4 dev5 dev6; do
  [ -f "$DEMO/$dev.json" ] || continue
  tpm=(); [ "$dev" = dev6 ] && tpm=(--tpm "swtpm:path=$TPM_SOCK")  # TPM attestation: challenge, key loaded in its TPM
  if "$BIN/keyline-devsim" --state "$DEMO/$dev.json" --register-with "$(emu device_endpoint)" --ca-cert "$(emu ca_cert)" \
       "${tpm[@]}" > "$DEMO/$dev.registration.json" 2> "$DEMO/$dev.registration.err"; then
    /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["registrationState"]; print("   %s: %s -> %s" % (sys.argv[2], r["registrationId"], r["assignedHub"]))' \
      "$DEMO/$dev.registration.json" "$dev"
  else
    echo "   $dev: refused: $(cat "$DEMO/$dev.registration.err")"
  fi
done
cat "$DEMO/issued/sensor-0001.pem" "$STATE/intermediate.pem" > "$DEMO/sensor-0001.chain.pem"
"$BIN/keyline-dps-register" --endpoint "$(emu device_endpoint)" --id-scope "$(emu id_scope)" \
  --registration-id sensor-0001 --cert-chain "$DEMO/sensor-0001.chain.pem" --key "$DEMO/csr/sensor-0001.key" \
  --ca-cert "$(emu ca_cert)" > "$DEMO/sensor-0001.registration.json"
echo "   sensor-0001 (leaf + intermediate over TLS) assigned to: $(/usr/bin/python3 -c \
  'import json,sys; print(json.load(open(sys.argv[1]))["registrationState"]["assignedHub"])' "$DEMO/sensor-0001.registration.json")"
stop_all
trap - EXIT
unset KEYLINE_DEMO_DPS_CS

say "12. Summary"
"$KEYLINE" --state "$STATE" ca show
echo
"$KEYLINE" --state "$STATE" ledger certificates --status revoked
"$KEYLINE" --state "$STATE" ledger certificates --registration-id board-7731
echo
echo "Demo state left in $DEMO"
