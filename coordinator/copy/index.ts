// Copying one volume between two agents: the first data path, before migrations.
export { copyVolume, skippedNotice } from "./copy.js";
export type { CopyRequest, CopyResult } from "./copy.js";
