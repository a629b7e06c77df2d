// Volume archives for fat charts (`theseus export` / `theseus import`): a claim's files as one zstd tar with a content
// digest, packed as it is read, and restored under strict rules (extract.ts is the security boundary) with the digest
// checked against what landed on disk.
export { packVolume } from "./pack.js";
export type { ArchiveProgress, ArchiveSummary, PackEvent } from "./pack.js";
export { checkEntryName, checkLinkTarget, extractVolume } from "./extract.js";
export type { ExtractLimits, ExtractResult } from "./extract.js";
export { emptyVolume, restoreVolume } from "./restore.js";
export type { RestoreOptions } from "./restore.js";
export { TreeDigest, digestTree, walkTree } from "./tree.js";
export { compressChunks, decompressChunks } from "./zstd.js";
