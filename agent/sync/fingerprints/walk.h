// walk.c's function, registered by fingerprints.c's module init (one addon, one .node file).
#pragma once
#include <node_api.h>

napi_value walk_lstat_at(napi_env env, napi_callback_info info);
