// Lint for what the compiler cannot see: floating promises, `any` leaking in, and imports that bypass a component's
// public index.ts (STYLE.md habit 1).
import tseslint from "typescript-eslint";

export default tseslint.config(
  // Plain-JS build helpers under scripts/ are outside the TypeScript project, so the typed rules cannot run on them.
  { ignores: ["dist/**", "node_modules/**", "proto/gen/**", "eslint.config.js", "ava.invariants.config.js", "scripts/**/*.mjs", "agent/sync/fingerprints/build/**", "agent/sync/fingerprints/*.cjs"] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-explicit-any": "error",
      "@typescript-eslint/consistent-type-imports": "error",
      // Handlers implement promise-returning contracts; an async function with nothing to await is the clearest form.
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "no-restricted-imports": [
        "error",
        {
          patterns: [
            {
              // A sibling component is reached only through its index.js; files inside one folder import each other freely.
              regex: "^\\.\\./(?!.*(index|_pb)\\.js$).*",
              message: "Import another component through its index.js (STYLE.md habit 1).",
            },
          ],
        },
      ],
    },
  },
  {
    files: ["test/**/*.ts"],
    rules: { "no-restricted-imports": "off", "@typescript-eslint/no-unsafe-assignment": "off" },
  },
);
