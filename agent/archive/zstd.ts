// zstd over async iterables of chunks. Compression through zstd-napi's stream; decompression through the low-level
// context so that every output buffer is handed on (and counted against the bound) before the next one is made: a
// small hostile input that decompresses to terabytes stops at the bound, having used one buffer of memory.
import { CompressStream } from "zstd-napi";
import zstd from "zstd-napi/binding.js";
import { TheseusError } from "../../common/index.js";

const OUT_BYTES = zstd.dStreamOutSize();
/** 2^27 = 128 MiB, zstd's own default limit for a decoder's window: a frame asking for more is refused. */
const WINDOW_LOG_MAX = 27;

/** Compresses a stream of chunks; yields compressed chunks as zstd produces them (backpressure from the consumer). */
export async function* compressChunks(chunks: AsyncIterable<Uint8Array>, level = 3): AsyncGenerator<Buffer> {
  const stream = new CompressStream({ compressionLevel: level });
  const feeding = (async () => {
    try {
      for await (const chunk of chunks) {
        if (!stream.write(chunk)) await new Promise<void>((resolve) => stream.once("drain", resolve));
      }
      stream.end();
    } catch (error) {
      stream.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  })();
  try {
    for await (const out of stream as AsyncIterable<Buffer>) yield out;
  } finally {
    stream.destroy();
    await feeding;
  }
}

/**
 * Decompresses a stream of zstd chunks (one or more frames), refusing more than `maxBytes` of output and input that
 * ends inside a frame (a truncated archive).
 */
export async function* decompressChunks(chunks: AsyncIterable<Uint8Array>, maxBytes: number): AsyncGenerator<Buffer> {
  const dctx = new zstd.DCtx();
  dctx.setParameter(zstd.DParameter.windowLogMax, WINDOW_LOG_MAX);
  let produced = 0;
  // 0 once a frame is complete; otherwise zstd's hint of what it still needs.
  let pending = 0;
  let sawInput = false;
  for await (const chunk of chunks) {
    let input = chunk;
    if (input.length > 0) sawInput = true;
    while (input.length > 0) {
      const out = Buffer.allocUnsafe(OUT_BYTES);
      let result: [number, number, number];
      try {
        result = dctx.decompressStream(out, input);
      } catch (cause) {
        throw new TheseusError("data_loss", "the volume archive is not valid zstd", { cause, hint: "the archive is corrupt: export it again" });
      }
      const [hint, written, consumed] = result;
      pending = hint;
      input = input.subarray(consumed);
      if (written > 0) {
        produced += written;
        if (produced > maxBytes) {
          throw new TheseusError("resource_exhausted", `the volume archive decompresses to more than the ${maxBytes} bytes its manifest allows`, {
            hint: "the archive was tampered with (a decompression bomb) or its manifest is wrong: refuse it, export again",
          });
        }
        yield out.subarray(0, written);
      } else if (consumed === 0) {
        break;
      }
    }
    // Flush what the context holds for input already given (an output buffer may have filled up).
    for (;;) {
      if (pending === 0) break;
      const out = Buffer.allocUnsafe(OUT_BYTES);
      const [hint, written] = dctx.decompressStream(out, Buffer.alloc(0));
      pending = hint;
      if (written === 0) break;
      produced += written;
      if (produced > maxBytes) throw new TheseusError("resource_exhausted", `the volume archive decompresses to more than the ${maxBytes} bytes its manifest allows`);
      yield out.subarray(0, written);
    }
  }
  if (!sawInput || pending !== 0) {
    throw new TheseusError("data_loss", "the volume archive ends in the middle of its data (truncated)", { hint: "the archive is incomplete: copy or export it again" });
  }
}
