// Certificates of an installation: the CA, agent and coordinator leaf certificates, on disk or throwaway in memory.
export { createCertificateAuthority, issueCertificate, parseCertificate } from "./x509.js";
export type { CaOptions, CertificateAuthority, IssueOptions, IssuedCertificate } from "./x509.js";
export {
  caPaths,
  createLocalInstallation,
  defaultPkiDir,
  initCertificateAuthority,
  issueToDirectory,
  leafPaths,
  listCoordinatorNames,
  loadCertificateAuthority,
  loadTlsMaterial,
} from "./store.js";
export type { LocalInstallationOptions } from "./store.js";
export { createThrowawayPki } from "./throwaway.js";
export type { ThrowawayPki } from "./throwaway.js";
export { DEFAULT_AGENT_SECRET, agentMaterialFor, agentSecretManifest, agentSecretYaml, applyAgentSecret } from "./secret.js";
export type { AgentSecret, AgentSecretOptions } from "./secret.js";
