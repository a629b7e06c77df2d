// The serializer's fast path for messages that are one bytes field (the sync engine's frames) must write exactly what
// protobuf-es writes, and leave every other message to it.
import test from "ava";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { deserializer, serializer } from "../rpc/codec.js";
import { SyncDownSchema, SyncUpSchema } from "../proto/gen/theseus/v1/transfer_pb.js";

const sizes = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000, 2 * 1024 * 1024 + 5];

test("a single-bytes message is encoded byte for byte as protobuf-es encodes it, and decodes back", (t) => {
  const serialize = serializer(SyncDownSchema);
  const deserialize = deserializer(SyncDownSchema);
  for (const size of sizes) {
    const frame = Buffer.alloc(size);
    for (let i = 0; i < size; i++) frame[i] = (i * 31 + 7) & 0xff;
    const fast = serialize({ frame } as never);
    t.deepEqual(fast, Buffer.from(toBinary(SyncDownSchema, create(SyncDownSchema, { frame }))), `size ${size}`);
    t.deepEqual(Buffer.from(deserialize(fast).frame), frame, `size ${size}`);
    // A message made with create() takes the same path.
    t.deepEqual(serialize(create(SyncDownSchema, { frame })), fast, `size ${size} (created)`);
  }
  t.deepEqual(serialize({} as never), Buffer.alloc(0));
});

test("messages with more than one field, or unknown fields, go through protobuf-es", (t) => {
  const up = serializer(SyncUpSchema);
  const value = { sessionId: "s-1", bandwidthBytesPerSecond: 5n, frame: new Uint8Array([1, 2, 3]) };
  t.deepEqual(up(value as never), Buffer.from(toBinary(SyncUpSchema, create(SyncUpSchema, value))));
  const withUnknown = fromBinary(SyncDownSchema, Buffer.from([0x0a, 0x01, 0x09, 0x10, 0x05]));
  t.is(withUnknown.$unknown?.length, 1);
  t.deepEqual(serializer(SyncDownSchema)(withUnknown), Buffer.from(toBinary(SyncDownSchema, withUnknown)));
});
