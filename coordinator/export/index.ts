// Fat charts (issue 11): an application exported with its volume data as a Helm chart (`theseus export`), and
// imported into any cluster with an agent (`theseus import`). The chart is plain Helm (templates with values; data/ kept
// out of Helm by .helmignore); the data is one zstd tar per claim, restored and verified by the target agent.
export { exportApp, fitClaimRequests, neutralObjects } from "./export.js";
export type { ExportEvent, ExportRequest, ExportResult } from "./export.js";
export { importApp, importValues, scanArchive, undoImport } from "./import.js";
export type { ImportEvent, ImportRequest, ImportResult } from "./import.js";
export { FORMAT, readArchive } from "./archive.js";
export type { Manifest, ManifestClaim } from "./archive.js";
export { NAMESPACE_PLACEHOLDER, chartFiles, objectTemplate } from "./chart.js";
export { applyValues, defaultValues, slotsOf } from "./values.js";
export type { ChartValues } from "./values.js";
export { importsDir, readJournal } from "./journal.js";
export type { ImportJournal, ImportPhase } from "./journal.js";
