"use strict";
// The addon built by `npm ci` (node-gyp, from fingerprints.c and the vendored xxhash.h).
module.exports = require("./build/Release/fingerprints.node");
