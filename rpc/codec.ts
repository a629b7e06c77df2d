// Turns a protobuf-es service descriptor into the grpc-js method definitions both servers and clients need.
import { create, fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt";
import type { DescMessage, DescMethod, DescService, MessageShape } from "@bufbuild/protobuf";
import type { MethodDefinition } from "@grpc/grpc-js";

export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

export function serializer<Desc extends DescMessage>(schema: Desc): (value: MessageShape<Desc>) => Buffer {
  const single = singleBytesField(schema);
  return (value) => {
    if (single !== undefined) {
      const fast = encodeSingleBytes(single.number, single.localName, value);
      if (fast !== undefined) return fast;
    }
    // create() returns a message of the right type unchanged and fills defaults into a plain init object.
    const bytes = toBinary(schema, create(schema, value as never));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

/**
 * The one field of a message that is nothing but an implicit-presence `bytes` field (SyncDown: the sync engine's
 * frames, every byte of a volume). Such a message is the field's tag, a varint length and the bytes; writing that
 * directly costs one allocation and one copy, where toBinary copied each frame into a growing buffer and again into its
 * result (issue 12's profile: ~0.8 s per GB in the protobuf writer, and the garbage behind a share of the GC).
 */
function singleBytesField(schema: DescMessage): { number: number; localName: string } | undefined {
  if (schema.fields.length !== 1) return undefined;
  const field = schema.fields[0];
  if (field === undefined || field.fieldKind !== "scalar" || field.scalar !== ScalarType.BYTES) return undefined;
  if (field.oneof !== undefined || field.presence !== FeatureSet_FieldPresence.IMPLICIT) return undefined;
  return { number: field.number, localName: field.localName };
}

/** The wire form of `{ [name]: bytes }`, or undefined when the value holds anything else (unknown fields, not bytes). */
function encodeSingleBytes(fieldNumber: number, localName: string, value: Record<string, unknown>): Buffer | undefined {
  const data = value[localName];
  if (data !== undefined && !(data instanceof Uint8Array)) return undefined;
  if ("$unknown" in value && value["$unknown"] !== undefined) return undefined;
  // Implicit presence: an empty field is not written at all.
  if (data === undefined || data.length === 0) return Buffer.alloc(0);
  const tag = (fieldNumber << 3) | 2; // wire type 2: length-delimited
  const header: number[] = [];
  for (let t = tag; ; t = Math.floor(t / 128)) {
    if (t < 128) {
      header.push(t);
      break;
    }
    header.push((t & 0x7f) | 0x80);
  }
  for (let n = data.length; ; n = Math.floor(n / 128)) {
    if (n < 128) {
      header.push(n);
      break;
    }
    header.push((n & 0x7f) | 0x80);
  }
  const out = Buffer.allocUnsafe(header.length + data.length);
  for (let i = 0; i < header.length; i++) out[i] = header[i] as number;
  out.set(data, header.length);
  return out;
}

export function deserializer<Desc extends DescMessage>(schema: Desc): (bytes: Buffer) => MessageShape<Desc> {
  return (bytes) => fromBinary(schema, bytes);
}

export function methodDefinition(method: DescMethod): MethodDefinition<unknown, unknown> {
  return {
    path: methodPath(method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input) as (value: unknown) => Buffer,
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output) as (value: unknown) => Buffer,
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}

export function methodsOf(service: DescService): readonly DescMethod[] {
  return service.methods;
}
