// Block hashes for the sync engine (block-list.ts), every 4 KiB block of a buffer in one call: XXH3-128 fingerprints
// for its diff and the protocol's sha256 block hashes. Per-block calls from JavaScript cost more than the hash itself
// (a native call and a result Buffer per block: 0.7 us, where XXH3 needs 0.25 us for 4 KiB; crypto.hash's sha256 runs
// at 1.1 GB/s on 4 KiB blocks, SHA256() on the same blocks at 1.8), and a 1 GiB file has 262,144 blocks.
// sha256 is OpenSSL's, the one Node itself is linked with and exports to addons.
#define XXH_INLINE_ALL
#include "xxhash/xxhash.h"
#include <node_api.h>
#include <openssl/sha.h>
#include "walk.h"

#define BLOCK_BYTES 4096
#define FINGERPRINT_BYTES 16

static napi_value fail(napi_env env, const char* message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static int bytes_of(napi_env env, napi_value v, unsigned char** data, size_t* length) {
  napi_typedarray_type type;
  napi_value buffer;
  size_t offset;
  void* p;
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, length, &p, &buffer, &offset) != napi_ok || type != napi_uint8_array) return 0;
  *data = (unsigned char*)p;
  return 1;
}

// fingerprints(data: Uint8Array, out: Uint8Array): number. Writes the canonical (big-endian) XXH3-128 of each block of
// `data` (the last one may be short) to `out`, 16 bytes per block, and returns the number of blocks.
static napi_value fingerprints(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  unsigned char *data, *out;
  size_t length, outLength;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return fail(env, "fingerprints(data, out)");
  if (!bytes_of(env, argv[0], &data, &length) || !bytes_of(env, argv[1], &out, &outLength)) {
    return fail(env, "fingerprints: data and out must be Uint8Arrays");
  }
  size_t blocks = (length + BLOCK_BYTES - 1) / BLOCK_BYTES;
  if (outLength < blocks * FINGERPRINT_BYTES) return fail(env, "fingerprints: out is too small");
  for (size_t b = 0; b < blocks; b++) {
    size_t from = b * BLOCK_BYTES;
    size_t n = length - from < BLOCK_BYTES ? length - from : BLOCK_BYTES;
    XXH128_canonicalFromHash((XXH128_canonical_t*)(out + b * FINGERPRINT_BYTES), XXH3_128bits(data + from, n));
  }
  napi_value result;
  napi_create_double(env, (double)blocks, &result);
  return result;
}

// blockHashes(data: Uint8Array, fingerprints: Uint8Array | null, sha256s: Uint8Array): number. Writes each block's
// fingerprint (16 bytes, as fingerprints() does) when `fingerprints` is not null, and its sha256 (32 bytes) to
// `sha256s`; returns the number of blocks.
static napi_value block_hashes(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  unsigned char *data, *fps = NULL, *shas;
  size_t length, fpsLength = 0, shasLength;
  napi_valuetype kind;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) return fail(env, "blockHashes(data, fingerprints, sha256s)");
  if (!bytes_of(env, argv[0], &data, &length) || !bytes_of(env, argv[2], &shas, &shasLength)) {
    return fail(env, "blockHashes: data and sha256s must be Uint8Arrays");
  }
  if (napi_typeof(env, argv[1], &kind) != napi_ok) return fail(env, "blockHashes: bad fingerprints argument");
  if (kind != napi_null && !bytes_of(env, argv[1], &fps, &fpsLength)) return fail(env, "blockHashes: fingerprints must be a Uint8Array or null");
  size_t blocks = (length + BLOCK_BYTES - 1) / BLOCK_BYTES;
  if (shasLength < blocks * SHA256_DIGEST_LENGTH || (fps != NULL && fpsLength < blocks * FINGERPRINT_BYTES)) {
    return fail(env, "blockHashes: an output is too small");
  }
  for (size_t b = 0; b < blocks; b++) {
    size_t from = b * BLOCK_BYTES;
    size_t n = length - from < BLOCK_BYTES ? length - from : BLOCK_BYTES;
    if (fps != NULL) XXH128_canonicalFromHash((XXH128_canonical_t*)(fps + b * FINGERPRINT_BYTES), XXH3_128bits(data + from, n));
    SHA256(data + from, n, shas + b * SHA256_DIGEST_LENGTH);
  }
  napi_value result;
  napi_create_double(env, (double)blocks, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "fingerprints", NAPI_AUTO_LENGTH, fingerprints, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "fingerprints", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "blockHashes", NAPI_AUTO_LENGTH, block_hashes, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "blockHashes", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "lstatAt", NAPI_AUTO_LENGTH, walk_lstat_at, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "lstatAt", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
