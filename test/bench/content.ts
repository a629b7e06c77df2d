// File contents with the compressibility of the data the datasets stand for, generated from a PRNG at hundreds of MB/s:
// - text: words from a fixed vocabulary (logs, configs, sources; zstd-1 shrinks it about 3x);
// - random: incompressible (media, archives, encrypted data);
// - pages: 4 KiB database pages, each holding a random share (25-95%) of incompressible rows and zeros as free space,
//   like a real table file (about 2x compressible, and never all-zero, so no sparse or dedup shortcut applies).
import type { Prng } from "./prng.js";

export const PAGE_BYTES = 4096;

export type ContentKind = "text" | "random" | "pages";

export interface ContentGenerator {
  /** Fills `buffer` entirely with content of `kind` and returns it. */
  fill(kind: ContentKind, buffer: Buffer): Buffer;
}

export function createContentGenerator(prng: Prng): ContentGenerator {
  const vocabulary = makeVocabulary(prng.fork("vocabulary"), 512);
  return {
    fill(kind, buffer) {
      switch (kind) {
        case "random":
          return prng.fill(buffer);
        case "pages":
          return fillPages(prng, buffer);
        case "text":
          return fillText(prng, vocabulary, buffer);
      }
    },
  };
}

function makeVocabulary(prng: Prng, size: number): Buffer[] {
  const words: Buffer[] = [];
  for (let i = 0; i < size; i++) {
    const length = prng.int(2, 11);
    const word = Buffer.allocUnsafe(length);
    for (let j = 0; j < length; j++) word[j] = 0x61 + (prng.next() % 26);
    words.push(word);
  }
  return words;
}

function fillText(prng: Prng, vocabulary: readonly Buffer[], buffer: Buffer): Buffer {
  let offset = 0;
  let wordsOnLine = 0;
  while (offset < buffer.length) {
    const r = prng.next();
    const word = vocabulary[r % vocabulary.length] as Buffer;
    offset += word.copy(buffer, offset);
    if (offset >= buffer.length) break;
    wordsOnLine++;
    // Lines of 6-17 words, as in logs and source files.
    buffer[offset++] = wordsOnLine > 5 + ((r >>> 16) % 12) ? 0x0a : 0x20;
    if (buffer[offset - 1] === 0x0a) wordsOnLine = 0;
  }
  return buffer;
}

function fillPages(prng: Prng, buffer: Buffer): Buffer {
  prng.fill(buffer);
  for (let page = 0; page < buffer.length; page += PAGE_BYTES) {
    const end = Math.min(page + PAGE_BYTES, buffer.length);
    const used = Math.floor(((end - page) * prng.int(25, 95)) / 100);
    buffer.fill(0, page + used, end);
  }
  return buffer;
}
