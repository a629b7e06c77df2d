// The matrix covers every failpoint the code defines: a new step boundary with a failpoint but no case (or a
// failpoint no process owns) fails here, without any cluster.
import test from "ava";
import { defineFailpoints } from "../common/index.js";
import { definedFailpoints, matrixCases, ownerOf, uncovered } from "./invariants/cases.js";

test("every defined failpoint is crashed in the process that owns it", (t) => {
  const names = definedFailpoints();
  t.true(names.length >= 20, `the agent's and the coordinator's failpoints are registered (${names.length})`);
  t.deepEqual(uncovered(names, matrixCases(names)), []);
  for (const c of matrixCases(names)) t.is(ownerOf(c.failpoint), c.owner);
});

test("a failpoint without a case, or without an owner, is reported", (t) => {
  defineFailpoints("test", ["target.brand-new-step", "mover.step"]);
  const names = definedFailpoints();
  // A new target step is covered automatically (it gets a plain case); one no process owns is not.
  t.deepEqual(uncovered(names, matrixCases(names)), ["mover.step"]);
  t.deepEqual(uncovered(names, matrixCases(names).filter((c) => c.failpoint !== "target.brand-new-step")), ["mover.step", "target.brand-new-step"].sort());
});
