// Unit tests of the job form generated from template schemas (every parameter type and
// constraint), file slot checks, the request body and error placement, and job helpers.
// Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  buildFormModel,
  buildJobRequest,
  checkFile,
  checkParam,
  dispositionName,
  errorTarget,
  exitText,
  formatBytes,
  globMatch,
  isJobFinal,
  jobTimes,
  libraryFacets,
  mergeJobList,
  normalizeResources,
  paramField,
  prefillValues,
  resourceField,
  resourcesSummary,
  slotSummary,
  sortJobs,
  templateMatches,
  upsertJob,
  validationMessages,
} from "../../daemon/vizdesk/static/jobform.js";

const SOLVER = {
  ref: "solver",
  name: "solver",
  display_name: "Mesh solver (example)",
  category: "cae",
  tags: ["cae", "mesh"],
  description: "Checks a mesh",
  version: "1.0",
  partition: "batch",
  image: "compute-debian12",
  resources: {
    cpus: { default: 1, max: 4 },
    memory_gb: { default: 1, max: 8 },
    time_limit_minutes: { default: 30, max: 240 },
  },
  parameters: [{ name: "label", type: "string", required: false, default: "run", max_length: 100, pattern: "^[A-Za-z0-9 _.-]*$" }],
  files: [
    { name: "mesh", pattern: "*.msh", required: true, multiple: false, max_size: 20 * 2 ** 30, description: "The mesh", format: null },
    { name: "case", pattern: "*.json", required: true, multiple: false, max_size: 2 ** 20, format: "json", schema: { type: "object" } },
    { name: "extra", pattern: "*.[ch]", required: false, multiple: true, max_size: 1000 },
  ],
  outputs: ["results/*"],
};
const ME = {
  user: "alice",
  policy: { partitions: ["batch", "viz"], max_cpus: 2, max_memory_gb: 16, max_gpus: 0, max_time_limit_minutes: 60, accounts: ["proj1"], qos: ["*"] },
  default_partition: "batch",
};

describe("paramField: one field per typed parameter", () => {
  it("int: a number input with step 1, min/max and default", () => {
    const f = paramField({ name: "count", type: "int", default: 1, min: 0, max: 100, description: "How many" });
    assert.equal(f.kind, "number");
    assert.equal(f.inputType, "number");
    assert.equal(f.step, "1");
    assert.equal(f.min, 0);
    assert.equal(f.max, 100);
    assert.equal(f.value, "1");
    assert.equal(f.key, "parameters.count");
    assert.match(f.help, /How many — whole number, 0 to 100/);
  });
  it("float: step any, only a min", () => {
    const f = paramField({ name: "sleep_seconds", type: "float", min: 0 });
    assert.equal(f.step, "any");
    assert.equal(f.min, 0);
    assert.equal(f.max, null);
    assert.equal(f.value, "");
    assert.equal(f.label, "Sleep seconds");
    assert.match(f.help, /at least 0/);
  });
  it("enum: a select with the choices", () => {
    const f = paramField({ name: "method", type: "enum", choices: ["sum", "squares"], default: "sum" });
    assert.equal(f.kind, "select");
    assert.deepEqual(f.choices, ["sum", "squares"]);
    assert.equal(f.value, "sum");
  });
  it("bool: a switch, default false unless true", () => {
    assert.equal(paramField({ name: "v", type: "bool" }).value, false);
    assert.equal(paramField({ name: "v", type: "bool", default: true }).kind, "switch");
    assert.equal(paramField({ name: "v", type: "bool", default: true }).value, true);
  });
  it("string: pattern and max_length", () => {
    const f = paramField({ name: "label", type: "string", pattern: "^[a-z]+$", max_length: 5, required: true });
    assert.equal(f.kind, "text");
    assert.equal(f.pattern, "^[a-z]+$");
    assert.equal(f.maxLength, 5);
    assert.equal(f.required, true);
    assert.match(f.help, /must match \^\[a-z\]\+\$, up to 5 characters/);
  });
});

describe("checkParam: constraints checked as you type", () => {
  const int = paramField({ name: "n", type: "int", min: 1, max: 10, required: true });
  const flt = paramField({ name: "x", type: "float", min: 0, max: 1 });
  const en = paramField({ name: "m", type: "enum", choices: ["a", "b"], required: true });
  const str = paramField({ name: "s", type: "string", pattern: "^[a-z]+$", max_length: 3 });
  const req = paramField({ name: "r", type: "string", required: true });
  it("int", () => {
    assert.deepEqual(checkParam(int, "5"), { value: 5, error: null });
    assert.match(checkParam(int, "").error, /required/);
    assert.match(checkParam(int, "2.5").error, /whole number/);
    assert.match(checkParam(int, "abc").error, /a number/);
    assert.match(checkParam(int, "0").error, /at least 1/);
    assert.match(checkParam(int, "11").error, /at most 10/);
    assert.deepEqual(checkParam(int, " 10 "), { value: 10, error: null });
  });
  it("float", () => {
    assert.deepEqual(checkParam(flt, "0.5"), { value: 0.5, error: null });
    assert.deepEqual(checkParam(flt, ""), { value: undefined, error: null });
    assert.match(checkParam(flt, "1.5").error, /at most 1/);
    assert.match(checkParam(flt, "-0.1").error, /at least 0/);
    assert.match(checkParam(flt, "Infinity").error, /a number/);
  });
  it("enum", () => {
    assert.deepEqual(checkParam(en, "b"), { value: "b", error: null });
    assert.match(checkParam(en, "").error, /choose one/);
    assert.match(checkParam(en, "c").error, /one of a, b/);
  });
  it("bool", () => {
    const b = paramField({ name: "v", type: "bool" });
    assert.deepEqual(checkParam(b, true), { value: true, error: null });
    assert.deepEqual(checkParam(b, false), { value: false, error: null });
  });
  it("string: pattern is a full match, max_length counts characters", () => {
    assert.deepEqual(checkParam(str, "abc"), { value: "abc", error: null });
    assert.match(checkParam(str, "ab1").error, /must match/);
    assert.match(checkParam(str, "abcd").error, /at most 3 characters/);
    assert.deepEqual(checkParam(str, ""), { value: undefined, error: null });
    const anch = paramField({ name: "t", type: "string", pattern: "[a-z]+" }); // fullmatch like Python
    assert.match(checkParam(anch, "ab cd").error, /must match/);
    const uni = paramField({ name: "u", type: "string", max_length: 2 });
    assert.equal(checkParam(uni, "é😀").error, null);
    assert.match(checkParam(req, "").error, /required/);
  });
  it("a pattern JavaScript cannot compile is left to the server", () => {
    const f = paramField({ name: "p", type: "string", pattern: "(?P<x>a)" });
    assert.equal(checkParam(f, "zzz").error, null);
  });
});

describe("resources limited by the template and the policy", () => {
  it("takes the smaller maximum and clamps the default", () => {
    assert.deepEqual(resourceField("cpus", { default: 1, max: 4 }, { max_cpus: 2 }), {
      key: "cpus", label: "CPUs", min: 1, max: 2, value: 1, fixed: false,
    });
    assert.equal(resourceField("cpus", { default: 8, max: 16 }, { max_cpus: 4 }).value, 4);
    assert.equal(resourceField("gpus", { default: 0, max: 2 }, { max_gpus: 0 }).fixed, true);
    assert.equal(resourceField("nodes", undefined, {}), null);
    assert.equal(resourceField("ntasks", { default: 2, max: 8 }, { max_tasks: 4 }).max, 4);
    assert.equal(resourceField("memory_gb", { default: 2, max: null }, null).max, 2);
  });
  it("a bare number is a fixed resource", () => {
    assert.deepEqual(normalizeResources({ cpus: 1, memory_gb: { default: 2, max: 4 } }), {
      cpus: { default: 1, max: 1 },
      memory_gb: { default: 2, max: 4 },
    });
  });
  it("summary", () => {
    assert.equal(resourcesSummary(SOLVER.resources), "1–4 CPUs · 1–8 GB · up to 4 h 00 min");
  });
});

describe("buildFormModel", () => {
  const m = buildFormModel(SOLVER, ME);
  it("has the params, resources, partition choices and slots", () => {
    assert.equal(m.ref, "solver");
    assert.equal(m.params.length, 1);
    assert.deepEqual(m.resources.map((r) => [r.key, r.max]), [["cpus", 2], ["memory_gb", 8], ["time_limit_minutes", 60]]);
    assert.deepEqual(m.partition, { choices: ["batch", "viz"], value: "batch" });
    assert.deepEqual(m.accounts, ["proj1"]);
    assert.equal(m.qos, null); // "*": free
    assert.deepEqual(m.slots.map((s) => s.key), ["files.mesh", "files.case", "files.extra"]);
    assert.equal(m.slots[0].summary, "*.msh · up to 20 GiB · required");
    assert.equal(m.slots[1].summary, "*.json · up to 1 MiB · required · JSON checked against a schema");
    assert.equal(slotSummary(SOLVER.files[2]), "*.[ch] · up to 1000 B · optional · several files");
  });
  it("a template partition outside a listed policy is still shown (the server decides)", () => {
    const m2 = buildFormModel({ ...SOLVER, partition: "gpu" }, ME);
    assert.deepEqual(m2.partition.choices, ["gpu", "batch", "viz"]);
  });
  it("without a policy everything is free", () => {
    const m3 = buildFormModel({ name: "x", resources: { cpus: 2 } }, null);
    assert.equal(m3.ref, "x");
    assert.equal(m3.partition.choices, null);
    assert.deepEqual(m3.resources[0], { key: "cpus", label: "CPUs", min: 1, max: 2, value: 2, fixed: false });
  });
});

describe("file checks", () => {
  it("globMatch is fnmatch on the name", () => {
    assert.ok(globMatch("*.msh", "wing.msh"));
    assert.ok(!globMatch("*.msh", "wing.msh.gz"));
    assert.ok(globMatch("case?.json", "case1.json"));
    assert.ok(!globMatch("case?.json", "case12.json"));
    assert.ok(globMatch("*.[ch]", "a.c"));
    assert.ok(!globMatch("*.[!ch]", "a.c"));
    assert.ok(globMatch("data[0-9].bin", "data7.bin"));
    assert.ok(globMatch("a+b(1).txt", "a+b(1).txt"));
    assert.ok(!globMatch("*.JSON", "x.json"));
  });
  it("checkFile: wrong pattern, too big, fine", () => {
    const slot = SOLVER.files[1];
    assert.equal(checkFile(slot, { name: "case.yaml", size: 10 }).code, "wrong_pattern");
    assert.equal(checkFile(slot, { name: "case.json", size: 2 ** 20 + 1 }).code, "too_big");
    assert.match(checkFile(slot, { name: "case.json", size: 2 ** 21 }).message, /2 MiB; this slot takes up to 1 MiB/);
    assert.equal(checkFile(slot, { name: "case.json", size: 2 ** 20 }), null);
  });
  it("formatBytes", () => {
    assert.equal(formatBytes(0), "0 B");
    assert.equal(formatBytes(65536), "64 KiB");
    assert.equal(formatBytes(1.5 * 2 ** 20), "1.5 MiB");
    assert.equal(formatBytes(200 * 2 ** 20), "200 MiB");
    assert.equal(formatBytes(null), "");
  });
});

describe("buildJobRequest", () => {
  const m = buildFormModel(SOLVER, ME);
  it("a complete form gives the API body", () => {
    const { body, errors } = buildJobRequest(
      m,
      { params: { label: "wing 1" }, resources: { cpus: "2", memory_gb: "", time_limit_minutes: "30" }, partition: "batch", account: "proj1", job_name: "wing-1" },
      { mesh: ["u1"], case: ["u2"] },
    );
    assert.deepEqual(errors, {});
    assert.deepEqual(body, {
      template: "solver",
      parameters: { label: "wing 1" },
      files: { mesh: ["u1"], case: ["u2"] },
      cpus: 2,
      time_limit_minutes: 30,
      partition: "batch",
      account: "proj1",
      job_name: "wing-1",
    });
  });
  it("only a user template's numbered version is pinned", () => {
    const user = { ...m, ref: "~alice/solver", version: "3" };
    assert.equal(buildJobRequest(user, { params: { label: "x" } }, { mesh: ["u1"], case: ["u2"] }).body.template_version, 3);
    assert.equal(buildJobRequest(m, { params: { label: "x" } }, { mesh: ["u1"], case: ["u2"] }).body.template_version, undefined);
  });
  it("errors are keyed like the API's field", () => {
    const { errors } = buildJobRequest(
      m,
      { params: { label: "bad/label" }, resources: { cpus: "3" }, partition: "gpu", account: "other", job_name: "a b" },
      { case: ["u2", "u3"] },
      new Set(),
    );
    assert.deepEqual(Object.keys(errors).sort(), ["account", "cpus", "files.case", "files.mesh", "job_name", "parameters.label", "partition"]);
    assert.match(errors["files.mesh"], /required \(\*\.msh\)/);
    assert.match(errors["files.case"], /one file only/);
    assert.match(errors.cpus, /between 1 and 2/);
  });
  it("a slot still uploading blocks the submission", () => {
    const { errors } = buildJobRequest(m, { params: {} }, { mesh: [], case: ["u2"] }, new Set(["mesh"]));
    assert.match(errors["files.mesh"], /wait until the upload has finished/);
  });
});

describe("API errors land next to their field", () => {
  const m = buildFormModel(SOLVER, ME);
  it("maps fields", () => {
    assert.equal(errorTarget("files.mesh", m), "files.mesh");
    assert.equal(errorTarget("files.case[0]", m), "files.case");
    assert.equal(errorTarget("files.nope", m), null);
    assert.equal(errorTarget("parameters.label", m), "parameters.label");
    assert.equal(errorTarget("parameters.zzz", m), null);
    assert.equal(errorTarget("cpus", m), "cpus");
    assert.equal(errorTarget("partition", m), "partition");
    assert.equal(errorTarget("template", m), null);
    assert.equal(errorTarget(null, m), null);
  });
  it("validate answers become messages per slot, with the JSON path", () => {
    const msgs = validationMessages({
      valid: false,
      slots: {
        mesh: { ok: true, files: ["a.msh"], errors: [] },
        case: { ok: false, files: ["c.json"], errors: [{ code: "schema", message: "'x' is not of type 'integer'", path: "$.solver.iterations", file: "c.json" }] },
        extra: { ok: false, errors: [] },
      },
    });
    assert.deepEqual(msgs, { case: ["c.json: 'x' is not of type 'integer' at $.solver.iterations"], extra: ["not valid"] });
  });
});

describe("library", () => {
  const list = [SOLVER, { ref: "hello", name: "hello", category: "examples", tags: ["demo", "shell"], description: "Print a message" }];
  it("facets and filters", () => {
    assert.deepEqual(libraryFacets(list), { categories: ["cae", "examples"], tags: ["cae", "demo", "mesh", "shell"] });
    assert.ok(templateMatches(SOLVER, { category: "cae" }));
    assert.ok(!templateMatches(SOLVER, { tag: "demo" }));
    assert.ok(templateMatches(list[1], { q: "PRINT msg" }) === false);
    assert.ok(templateMatches(list[1], { q: "print message" }));
    assert.ok(templateMatches(SOLVER, {}));
  });
});

describe("submit again", () => {
  it("prefills params and resources from the previous request", () => {
    const m = buildFormModel({ ...SOLVER, parameters: [...SOLVER.parameters, { name: "v", type: "bool" }] }, ME);
    const v = prefillValues(m, { parameters: { label: "again", v: true }, cpus: 2, partition: "viz", memory_gb: null });
    assert.deepEqual(v, { params: { label: "again", v: true }, resources: { cpus: "2" }, partition: "viz" });
  });
});

describe("jobs", () => {
  const now = Date.parse("2025-01-01T10:10:00Z");
  it("times while queued, running and after", () => {
    assert.equal(jobTimes({ state: "QUEUED", created_at: "2025-01-01T10:09:00Z" }, now).text, "queued 1 min 00 s");
    const running = jobTimes({ state: "RUNNING", created_at: "2025-01-01T10:00:00Z", started_at: "2025-01-01T10:05:00Z", time_limit_minutes: 30 }, now);
    assert.equal(running.elapsedSeconds, 300);
    assert.equal(running.remainingSeconds, 1500);
    assert.equal(running.text, "running 5 min 00 s · 25 min 00 s left");
    const done = jobTimes({ state: "COMPLETED", started_at: "2025-01-01T10:05:00Z", ended_at: "2025-01-01T10:05:42Z" }, now);
    assert.equal(done.text, "ran 42 s");
    assert.equal(done.remainingSeconds, null);
    assert.equal(jobTimes({ state: "CANCELLED", created_at: "2025-01-01T10:05:00Z", ended_at: "2025-01-01T10:06:00Z" }, now).text, "did not run");
  });
  it("final states are sticky and sorting puts active first", () => {
    let jobs = new Map();
    jobs = upsertJob(jobs, { id: "a", state: "COMPLETED", created_at: "2025-01-01T10:00:00Z" });
    jobs = upsertJob(jobs, { id: "a", state: "RUNNING" });
    assert.equal(jobs.get("a").state, "COMPLETED");
    jobs = mergeJobList(jobs, [{ id: "a", state: "RUNNING" }, { id: "b", state: "QUEUED", created_at: "2025-01-01T09:00:00Z" }]);
    assert.equal(jobs.get("a").state, "COMPLETED");
    assert.deepEqual(sortJobs([...jobs.values()]).map((j) => j.id), ["b", "a"]);
    assert.ok(isJobFinal("TIMEOUT") && !isJobFinal("CANCELLING"));
  });
  it("exit text and download names", () => {
    assert.equal(exitText({ exit_code: 0 }), "exit code 0");
    assert.equal(exitText({ exit_code: 137, signal: 9 }), "killed by signal 9");
    assert.equal(exitText({}), "");
    assert.equal(dispositionName(`attachment; filename="r_port.json"; filename*=UTF-8''r%C3%A9port.json`, "x"), "réport.json");
    assert.equal(dispositionName(`attachment; filename="job-1.zip"`, "x"), "job-1.zip");
    assert.equal(dispositionName(null, "x"), "x");
  });
});
