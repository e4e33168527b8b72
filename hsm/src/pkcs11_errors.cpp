// Names and advice for PKCS#11 return values (PKCS#11 v2.40 §5.1).
#include <cstdio>

#include "pkcs11_store.hpp"

namespace keyline::hsm {

namespace {

struct RvText {
  CK_RV rv;
  const char* name;
  const char* advice;
};

// clang-format off
#define KL_CKR(rv, advice) RvText{rv, #rv, advice}
constexpr RvText kRvTexts[] = {
    KL_CKR(CKR_OK, ""), KL_CKR(CKR_CANCEL, "the operation was cancelled"),
    KL_CKR(CKR_HOST_MEMORY, "the module ran out of memory"),
    KL_CKR(CKR_SLOT_ID_INVALID, "the slot is gone; check that the token is connected"),
    KL_CKR(CKR_GENERAL_ERROR, "the module reported an unrecoverable error; check its logs"),
    KL_CKR(CKR_FUNCTION_FAILED, "the token could not perform the function"),
    KL_CKR(CKR_ARGUMENTS_BAD, "the module rejected the arguments"), KL_CKR(CKR_NO_EVENT, ""),
    KL_CKR(CKR_NEED_TO_CREATE_THREADS, "the module needs to create threads"),
    KL_CKR(CKR_CANT_LOCK, "the module cannot use OS locking"),
    KL_CKR(CKR_ATTRIBUTE_READ_ONLY, "the attribute cannot be set"),
    KL_CKR(CKR_ATTRIBUTE_SENSITIVE, "the attribute is sensitive and cannot be read"),
    KL_CKR(CKR_ATTRIBUTE_TYPE_INVALID, "the object has no such attribute"),
    KL_CKR(CKR_ATTRIBUTE_VALUE_INVALID, "the token does not accept an attribute value (key size? curve?)"),
    KL_CKR(CKR_ACTION_PROHIBITED, "the token's policy forbids this action"),
    KL_CKR(CKR_DATA_INVALID, "the token does not accept the data"),
    KL_CKR(CKR_DATA_LEN_RANGE, "the data has a length the mechanism does not accept"),
    KL_CKR(CKR_DEVICE_ERROR, "the token reported a device error"),
    KL_CKR(CKR_DEVICE_MEMORY, "the token is out of memory (too many objects?)"),
    KL_CKR(CKR_DEVICE_REMOVED, "the token was removed"),
    KL_CKR(CKR_FUNCTION_CANCELED, "the function was cancelled"), KL_CKR(CKR_FUNCTION_NOT_PARALLEL, ""),
    KL_CKR(CKR_FUNCTION_NOT_SUPPORTED, "the module does not implement this function"),
    KL_CKR(CKR_KEY_HANDLE_INVALID, "the key object is gone"),
    KL_CKR(CKR_KEY_SIZE_RANGE, "the token does not support this key size"),
    KL_CKR(CKR_KEY_TYPE_INCONSISTENT, "the key type does not fit the mechanism"),
    KL_CKR(CKR_KEY_NOT_NEEDED, ""), KL_CKR(CKR_KEY_CHANGED, ""), KL_CKR(CKR_KEY_NEEDED, ""),
    KL_CKR(CKR_KEY_INDIGESTIBLE, ""),
    KL_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED, "the key's attributes do not allow this use (CKA_SIGN false?)"),
    KL_CKR(CKR_KEY_NOT_WRAPPABLE, ""), KL_CKR(CKR_KEY_UNEXTRACTABLE, "the key is not extractable"),
    KL_CKR(CKR_MECHANISM_INVALID, "the token does not support this mechanism"),
    KL_CKR(CKR_MECHANISM_PARAM_INVALID, "the token rejected the mechanism parameters"),
    KL_CKR(CKR_OBJECT_HANDLE_INVALID, "the object is gone"),
    KL_CKR(CKR_OPERATION_ACTIVE, "another operation is active in the session"),
    KL_CKR(CKR_OPERATION_NOT_INITIALIZED, ""), KL_CKR(CKR_PIN_INCORRECT, "the PIN is wrong"),
    KL_CKR(CKR_PIN_INVALID, "the PIN has characters the token does not accept"),
    KL_CKR(CKR_PIN_LEN_RANGE, "the PIN is too long or too short for the token"),
    KL_CKR(CKR_PIN_EXPIRED, "the PIN has expired; set a new one with the token's tools"),
    KL_CKR(CKR_PIN_LOCKED, "too many wrong PINs; the security officer must unlock it"),
    KL_CKR(CKR_SESSION_CLOSED, "the session was closed"),
    KL_CKR(CKR_SESSION_COUNT, "the token has no free sessions"),
    KL_CKR(CKR_SESSION_HANDLE_INVALID, "the session is gone"), KL_CKR(CKR_SESSION_PARALLEL_NOT_SUPPORTED, ""),
    KL_CKR(CKR_SESSION_READ_ONLY, "the session is read-only"), KL_CKR(CKR_SESSION_EXISTS, ""),
    KL_CKR(CKR_SESSION_READ_ONLY_EXISTS, ""),
    KL_CKR(CKR_SESSION_READ_WRITE_SO_EXISTS, "a security officer session is open; close it first"),
    KL_CKR(CKR_SIGNATURE_INVALID, "the signature is invalid"),
    KL_CKR(CKR_SIGNATURE_LEN_RANGE, "the signature has the wrong length"),
    KL_CKR(CKR_TEMPLATE_INCOMPLETE, "the token needs more attributes"),
    KL_CKR(CKR_TEMPLATE_INCONSISTENT, "the token rejected the combination of attributes"),
    KL_CKR(CKR_TOKEN_NOT_PRESENT, "no token in the slot"),
    KL_CKR(CKR_TOKEN_NOT_RECOGNIZED, "the module does not recognise the token"),
    KL_CKR(CKR_TOKEN_WRITE_PROTECTED, "the token is write-protected"), KL_CKR(CKR_USER_ALREADY_LOGGED_IN, ""),
    KL_CKR(CKR_USER_NOT_LOGGED_IN, "the session is not logged in"),
    KL_CKR(CKR_USER_PIN_NOT_INITIALIZED, "the token's user PIN was never set; initialise the token"),
    KL_CKR(CKR_USER_TYPE_INVALID, ""),
    KL_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "another user (the security officer?) is logged in"),
    KL_CKR(CKR_USER_TOO_MANY_TYPES, ""), KL_CKR(CKR_RANDOM_SEED_NOT_SUPPORTED, ""),
    KL_CKR(CKR_RANDOM_NO_RNG, "the token has no random number generator"),
    KL_CKR(CKR_DOMAIN_PARAMS_INVALID, "the token does not support these domain parameters (curve?)"),
    KL_CKR(CKR_CURVE_NOT_SUPPORTED, "the token does not support this curve"),
    KL_CKR(CKR_BUFFER_TOO_SMALL, ""), KL_CKR(CKR_INFORMATION_SENSITIVE, ""),
    KL_CKR(CKR_CRYPTOKI_NOT_INITIALIZED, "the module was not initialised"),
    KL_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED, ""), KL_CKR(CKR_MUTEX_BAD, ""), KL_CKR(CKR_MUTEX_NOT_LOCKED, ""),
    KL_CKR(CKR_FIPS_SELF_TEST_FAILED, "the module failed its self-test"),
    KL_CKR(CKR_LIBRARY_LOAD_FAILED, "the module could not load a library it needs"),
    KL_CKR(CKR_PIN_TOO_WEAK, ""), KL_CKR(CKR_PUBLIC_KEY_INVALID, "the token rejected the public key"),
    KL_CKR(CKR_FUNCTION_REJECTED, "the token rejected the function"),
};
#undef KL_CKR
// clang-format on

const RvText* rv_text(CK_RV rv) {
  for (const auto& t : kRvTexts)
    if (t.rv == rv) return &t;
  return nullptr;
}

}  // namespace

std::string ckr_name(unsigned long rv) {
  if (const RvText* t = rv_text(rv)) return t->name;
  char buf[48];
  if (rv >= CKR_VENDOR_DEFINED)
    std::snprintf(buf, sizeof buf, "CKR_VENDOR_DEFINED+0x%lX", rv - CKR_VENDOR_DEFINED);
  else
    std::snprintf(buf, sizeof buf, "CKR_0x%lX", rv);
  return buf;
}

const char* ckr_advice(unsigned long rv) {
  const RvText* t = rv_text(rv);
  return t ? t->advice : "";
}

}  // namespace keyline::hsm
