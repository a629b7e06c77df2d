// The record log (records.log): the demo app's write-ahead log. Each acknowledged write is one framed record, appended
// and fsync'd before the client hears "201". The frame carries everything needed to prove a record intact without the
// client's copy: its sequence number, its length, the SHA-256 of its payload (the checksum the client is given back)
// and a short check over the header itself, so that a torn or overwritten header is told apart from a valid one.
//
//   offset 0   magic "TRC1"            4 bytes
//          4   seq                     u64 big-endian (1, 2, 3, ... without gaps)
//         12   payload length          u32 big-endian
//         16   sha256(payload)         32 bytes
//         48   header check            first 4 bytes of sha256(bytes 0..47)
//         52   payload                 `length` bytes
import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";

export const RECORD_MAGIC = Buffer.from("TRC1", "latin1");
export const RECORD_HEADER_BYTES = 52;
/** Refuses absurd lengths read from a damaged header before allocating anything. */
export const MAX_RECORD_PAYLOAD_BYTES = 64 * 1024 * 1024;

export function sha256(data: Uint8Array): Buffer {
  return createHash("sha256").update(data).digest();
}

export function encodeRecord(seq: number, payload: Uint8Array, payloadSha256: Buffer = sha256(payload)): Buffer {
  const frame = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  RECORD_MAGIC.copy(frame, 0);
  frame.writeBigUInt64BE(BigInt(seq), 4);
  frame.writeUInt32BE(payload.length, 12);
  payloadSha256.copy(frame, 16);
  sha256(frame.subarray(0, 48)).copy(frame, 48, 0, 4);
  frame.set(payload, RECORD_HEADER_BYTES);
  return frame;
}

export interface RecordHeader {
  readonly seq: number;
  readonly length: number;
  readonly payloadSha256: Buffer;
}

/** Decodes a header, or returns undefined when the bytes are not a valid header (wrong magic, failed check, bad length). */
export function decodeRecordHeader(bytes: Buffer): RecordHeader | undefined {
  if (bytes.length < RECORD_HEADER_BYTES || !bytes.subarray(0, 4).equals(RECORD_MAGIC)) return undefined;
  if (!sha256(bytes.subarray(0, 48)).subarray(0, 4).equals(bytes.subarray(48, 52))) return undefined;
  const seq = bytes.readBigUInt64BE(4);
  const length = bytes.readUInt32BE(12);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER) || length > MAX_RECORD_PAYLOAD_BYTES) return undefined;
  return { seq: Number(seq), length, payloadSha256: Buffer.from(bytes.subarray(16, 48)) };
}

/**
 * One step of a scan:
 * - "record": a whole frame. `intact` is false when the payload's SHA-256 differs from the header's; the header still
 *   says where the next frame starts, so a scan goes on past a damaged payload and can name every damaged record.
 * - "gap": bytes that are not a frame, followed by a valid frame further on: damage in the middle of the log.
 * - "end": the end of the readable log. `tornBytes` counts trailing bytes after the last whole frame in which no frame
 *   starts: what a crash during an append leaves (a prefix of a frame, or zeros where the size reached the disk before
 *   the data). Such a record was never acknowledged (acks follow the fsync), so dropping it loses nothing.
 */
export type ScanItem =
  | { readonly kind: "record"; readonly offset: number; readonly header: RecordHeader; readonly intact: boolean; readonly payload: Buffer | undefined }
  | { readonly kind: "gap"; readonly offset: number; readonly bytes: number }
  | { readonly kind: "end"; readonly offset: number; readonly tornBytes: number };

export interface ScanOptions {
  /** Keep each payload in the item (the verifier does not need them; tests sometimes do). */
  readonly keepPayloads?: boolean;
  readonly chunkBytes?: number;
}

/**
 * Reads the log from the start, one frame at a time, with bounded memory (one chunk plus the largest record), so a log
 * of any size can be scanned. The file is read up to the size it had when the scan started.
 */
export async function* scanRecordLog(file: FileHandle, options: ScanOptions = {}): AsyncGenerator<ScanItem> {
  const size = (await file.stat()).size;
  const chunkBytes = options.chunkBytes ?? 1024 * 1024;
  let buffer = Buffer.alloc(0);
  let bufferStart = 0; // file offset of buffer[0]

  // Buffers `n` bytes from file offset `at` (the caller guarantees at + n <= size and at >= bufferStart).
  const ensure = async (at: number, n: number): Promise<Buffer> => {
    if (at - bufferStart + n > buffer.length) {
      const keep = at - bufferStart < buffer.length ? buffer.subarray(at - bufferStart) : Buffer.alloc(0);
      const readFrom = at + keep.length;
      const fresh = await readAt(file, readFrom, Math.min(Math.max(n - keep.length, chunkBytes), size - readFrom));
      buffer = Buffer.concat([keep, fresh]);
      bufferStart = at;
    }
    return buffer.subarray(at - bufferStart, at - bufferStart + n);
  };

  let offset = 0;
  while (offset < size) {
    const header = size - offset >= RECORD_HEADER_BYTES ? decodeRecordHeader(await ensure(offset, RECORD_HEADER_BYTES)) : undefined;
    if (header === undefined || offset + RECORD_HEADER_BYTES + header.length > size) {
      const next = await findNextHeader(file, offset + 1, size);
      if (next === undefined) {
        yield { kind: "end", offset, tornBytes: size - offset };
        return;
      }
      yield { kind: "gap", offset, bytes: next - offset };
      offset = next;
      continue;
    }
    const payload = (await ensure(offset, RECORD_HEADER_BYTES + header.length)).subarray(RECORD_HEADER_BYTES);
    const intact = sha256(payload).equals(header.payloadSha256);
    yield { kind: "record", offset, header, intact, payload: options.keepPayloads === true ? Buffer.from(payload) : undefined };
    offset += RECORD_HEADER_BYTES + header.length;
  }
  yield { kind: "end", offset, tornBytes: 0 };
}

async function readAt(file: FileHandle, position: number, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await file.read(out, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return out.subarray(0, filled);
}

/** The offset of the next valid frame header at or after `from` whose frame fits in the file, if any. */
async function findNextHeader(file: FileHandle, from: number, size: number): Promise<number | undefined> {
  const chunk = 1024 * 1024;
  for (let at = from; at < size; at += chunk) {
    // Overlap by a header so that a header straddling two chunks is seen.
    const bytes = await readAt(file, at, Math.min(chunk + RECORD_HEADER_BYTES, size - at));
    for (let i = bytes.indexOf(RECORD_MAGIC); i !== -1 && i < chunk; i = bytes.indexOf(RECORD_MAGIC, i + 1)) {
      const header = decodeRecordHeader(bytes.subarray(i, i + RECORD_HEADER_BYTES));
      if (header !== undefined && at + i + RECORD_HEADER_BYTES + header.length <= size) return at + i;
    }
  }
  return undefined;
}
