#!/usr/bin/python3
"""Validates an ARM deployment template against Microsoft's published schemas, offline.

Usage: validate_arm.py SCHEMA_DIR TEMPLATE.json

SCHEMA_DIR holds deploymentTemplate-2019-04-01.json, Microsoft.Devices-2022-12-12.json and
common-definitions.json (see its SOURCES.txt). The envelope is validated with
definitions.resource stubbed to a plain object (the published one lists every Azure
provider through remote references); each Microsoft.Devices resource is then validated
against its entry in resourceDefinitions. https://schema.management.azure.com/... references
resolve to the local files. Exit 0 when valid; 1 with the errors on stderr otherwise.
Needs Debian's python3-jsonschema, hence /usr/bin/python3.
"""

import copy
import json
import os
import sys

import jsonschema

FILES = {
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json": "deploymentTemplate-2019-04-01.json",
    "https://schema.management.azure.com/schemas/2022-12-12/Microsoft.Devices.json": "Microsoft.Devices-2022-12-12.json",
    "https://schema.management.azure.com/schemas/common/definitions.json": "common-definitions.json",
}

RESOURCE_DEFINITIONS = {
    "Microsoft.Devices/provisioningServices": "provisioningServices",
    "Microsoft.Devices/provisioningServices/certificates": "provisioningServices_certificates",
}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    schema_dir, template_path = sys.argv[1], sys.argv[2]
    store = {}
    for url, name in FILES.items():
        with open(os.path.join(schema_dir, name), encoding="utf-8") as f:
            doc = json.load(f)
        store[url] = doc
        store[url + "#"] = doc
    with open(template_path, encoding="utf-8") as f:
        template = json.load(f)

    errors = []
    envelope = copy.deepcopy(store[next(iter(FILES))])
    envelope["definitions"]["resource"] = {"type": "object"}
    resolver = jsonschema.RefResolver(base_uri=next(iter(FILES)), referrer=envelope, store=store)
    validator = jsonschema.Draft4Validator(envelope, resolver=resolver)
    errors += ["envelope: %s at %s" % (e.message, list(e.absolute_path)) for e in validator.iter_errors(template)]

    devices_url = "https://schema.management.azure.com/schemas/2022-12-12/Microsoft.Devices.json"
    devices = store[devices_url]
    for i, resource in enumerate(template.get("resources", [])):
        definition = RESOURCE_DEFINITIONS.get(resource.get("type"))
        if definition is None:
            errors.append("resources[%d]: unexpected type %r" % (i, resource.get("type")))
            continue
        schema = devices["resourceDefinitions"][definition]
        resolver = jsonschema.RefResolver(base_uri=devices_url, referrer=devices, store=store)
        v = jsonschema.Draft4Validator(schema, resolver=resolver)
        for e in v.iter_errors(resource):
            errors.append("resources[%d] (%s): %s at %s" % (i, definition, e.message, list(e.absolute_path)))

    if not template.get("resources"):
        errors.append("the template has no resources")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print("valid: %d resources" % len(template["resources"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
