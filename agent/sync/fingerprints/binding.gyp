{
  "targets": [
    {
      "target_name": "fingerprints",
      "sources": ["fingerprints.c", "walk.c"],
      "cflags": ["-O3"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
