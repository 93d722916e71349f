// vizdesk portal: pure logic of the batch side (no DOM, no network), unit-tested with
// `node --test tests/js/`. The job form generated from a template (typed parameters,
// resources bounded by the caller's policy, file slots), client-side file checks, the
// submission body, API error fields → form places, and the job view helpers.

import { formatDuration } from "./state.js";

// ---------------------------------------------------------------------------------
// Sizes and globs

/** "0 B", "512 B", "64 KiB", "1.5 MiB", "20 GiB" (binary units, like the templates). */
export function formatBytes(n) {
  if (n === null || n === undefined || !Number.isFinite(Number(n))) return "";
  let v = Math.max(0, Number(n));
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  const text = v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1).replace(/\.0$/, "");
  return `${text} ${units[i]}`;
}

/**
 * fnmatch-style match of a file name against a slot pattern, as the daemon's check does
 * on the name: `*` any run, `?` one character, `[abc]` / `[!abc]` / `[a-z]` a set. Case-sensitive.
 */
export function globMatch(pattern, name) {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end < 0) {
        re += "\\[";
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith("!");
      if (negate) body = body.slice(1);
      body = body.replace(/[\\\]^]/g, "\\$&");
      re += `[${negate ? "^" : ""}${body}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\/]/g, "\\$&");
  }
  re += "$";
  try {
    return new RegExp(re, "s").test(name);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------
// Template library

/** Distinct sorted categories and tags of a template list (for the filters). */
export function libraryFacets(templates) {
  const categories = new Set();
  const tags = new Set();
  for (const t of templates ?? []) {
    if (t.category) categories.add(t.category);
    for (const tag of t.tags ?? []) tags.add(tag);
  }
  return { categories: [...categories].sort(), tags: [...tags].sort() };
}

/** Client-side filter (the server filters too): category, tag, free text on names/description/tags. */
export function templateMatches(t, { category = "", tag = "", q = "" } = {}) {
  if (category && t.category !== category) return false;
  if (tag && !(t.tags ?? []).includes(tag)) return false;
  const words = String(q).toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return true;
  const hay = [t.ref, t.name, t.display_name, t.description, t.category, ...(t.tags ?? [])]
    .filter(Boolean)
    .join(" ")
    .toLowerCase();
  return words.every((w) => hay.includes(w));
}

/** One-line resources summary of a template: "1–4 CPUs · 1–8 GB · up to 4 h". */
export function resourcesSummary(resources) {
  const r = normalizeResources(resources);
  const bits = [];
  const range = (x, unit) => {
    if (!x) return null;
    return x.max !== null && x.max !== x.default ? `${x.default}–${x.max}${unit}` : `${x.default}${unit}`;
  };
  if (r.cpus) bits.push(`${range(r.cpus, "")} CPU${r.cpus.max === 1 ? "" : "s"}`);
  if (r.memory_gb) bits.push(`${range(r.memory_gb, " GB")}`);
  if (r.gpus && (r.gpus.max ?? r.gpus.default) > 0) bits.push(`${range(r.gpus, "")} GPU`);
  if (r.nodes && (r.nodes.max ?? 1) > 1) bits.push(`${range(r.nodes, "")} nodes`);
  if (r.ntasks && (r.ntasks.max ?? 1) > 1) bits.push(`${range(r.ntasks, "")} tasks`);
  if (r.time_limit_minutes) {
    const t = r.time_limit_minutes;
    bits.push(`up to ${formatDuration((t.max ?? t.default) * 60)}`);
  }
  return bits.join(" · ");
}

// ---------------------------------------------------------------------------------
// The job form

export const RESOURCE_KEYS = Object.freeze([
  "cpus",
  "memory_gb",
  "gpus",
  "time_limit_minutes",
  "nodes",
  "ntasks",
  "ntasks_per_node",
]);

const RESOURCE_LABELS = {
  cpus: "CPUs",
  memory_gb: "Memory (GB)",
  gpus: "GPUs",
  time_limit_minutes: "Time limit (minutes)",
  nodes: "Nodes",
  ntasks: "Tasks (MPI ranks)",
  ntasks_per_node: "Tasks per node",
};

const POLICY_MAX = {
  cpus: "max_cpus",
  memory_gb: "max_memory_gb",
  gpus: "max_gpus",
  time_limit_minutes: "max_time_limit_minutes",
  nodes: "max_nodes",
  ntasks: "max_tasks",
  ntasks_per_node: "max_tasks",
};

/** A template's resources as {key: {default, max}} (a bare number means fixed). */
export function normalizeResources(resources) {
  const out = {};
  for (const [k, v] of Object.entries(resources ?? {})) {
    if (v === null || v === undefined) continue;
    if (typeof v === "number") out[k] = { default: v, max: v };
    else if (typeof v === "object") {
      const def = Number.isFinite(Number(v.default)) && v.default !== null ? Number(v.default) : null;
      const max = Number.isFinite(Number(v.max)) && v.max !== null ? Number(v.max) : null;
      out[k] = { default: def ?? max ?? 1, max };
    }
  }
  return out;
}

function labelOf(name) {
  const s = String(name).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * One form field for a typed template parameter:
 * {name, key ("parameters.<name>"), label, kind: number|select|switch|text, type, inputType,
 *  min, max, step, required, value (initial, as form text / boolean), pattern, maxLength,
 *  choices, help}.
 */
export function paramField(spec) {
  const f = {
    name: spec.name,
    key: `parameters.${spec.name}`,
    label: labelOf(spec.name),
    type: spec.type,
    required: Boolean(spec.required),
    description: spec.description ?? "",
    min: null,
    max: null,
    step: null,
    pattern: null,
    maxLength: null,
    choices: null,
  };
  const hints = [];
  switch (spec.type) {
    case "int":
    case "float":
      f.kind = "number";
      f.inputType = "number";
      f.step = spec.type === "int" ? "1" : "any";
      if (spec.min !== undefined && spec.min !== null) f.min = Number(spec.min);
      if (spec.max !== undefined && spec.max !== null) f.max = Number(spec.max);
      f.value = spec.default !== undefined && spec.default !== null ? String(spec.default) : "";
      hints.push(spec.type === "int" ? "whole number" : "number");
      if (f.min !== null && f.max !== null) hints.push(`${f.min} to ${f.max}`);
      else if (f.min !== null) hints.push(`at least ${f.min}`);
      else if (f.max !== null) hints.push(`at most ${f.max}`);
      break;
    case "enum":
      f.kind = "select";
      f.choices = (spec.choices ?? []).map(String);
      f.value = spec.default !== undefined && spec.default !== null ? String(spec.default) : f.required ? "" : "";
      if (f.value === "" && f.required && f.choices.length === 1) f.value = f.choices[0];
      break;
    case "bool":
      f.kind = "switch";
      f.value = spec.default === true;
      break;
    default:
      f.kind = "text";
      f.inputType = "text";
      f.pattern = spec.pattern ?? null;
      f.maxLength = spec.max_length ?? null;
      f.value = spec.default !== undefined && spec.default !== null ? String(spec.default) : "";
      if (f.pattern) hints.push(`must match ${f.pattern}`);
      if (f.maxLength) hints.push(`up to ${f.maxLength} characters`);
      break;
  }
  f.help = [f.description, hints.join(", ")].filter(Boolean).join(" — ");
  return f;
}

/**
 * Checks one parameter value typed in the form (text for numbers and strings, a boolean
 * for switches). Returns {value, error}: value is what the request carries (undefined:
 * leave it out so the template's default applies), error a message or null.
 */
export function checkParam(field, raw) {
  const label = field.label;
  if (field.kind === "switch") return { value: Boolean(raw), error: null };
  const text = raw === undefined || raw === null ? "" : String(raw);
  if (field.kind === "number") {
    const t = text.trim();
    if (t === "") return field.required ? { value: undefined, error: `${label} is required` } : { value: undefined, error: null };
    const n = Number(t);
    if (!Number.isFinite(n)) return { value: undefined, error: `${label}: a number` };
    if (field.type === "int" && !Number.isInteger(n)) return { value: undefined, error: `${label}: a whole number` };
    if (field.min !== null && n < field.min) return { value: undefined, error: `${label}: at least ${field.min}` };
    if (field.max !== null && n > field.max) return { value: undefined, error: `${label}: at most ${field.max}` };
    return { value: n, error: null };
  }
  if (field.kind === "select") {
    if (text === "") return field.required ? { value: undefined, error: `${label}: choose one` } : { value: undefined, error: null };
    if (!field.choices.includes(text)) return { value: undefined, error: `${label}: one of ${field.choices.join(", ")}` };
    return { value: text, error: null };
  }
  // string
  if (text === "") {
    // empty: the template's default applies (the field is left out of the request)
    return field.required ? { value: undefined, error: `${label} is required` } : { value: undefined, error: null };
  }
  if (field.maxLength !== null && [...text].length > field.maxLength) {
    return { value: undefined, error: `${label}: at most ${field.maxLength} characters` };
  }
  if (field.pattern) {
    let re;
    try {
      re = new RegExp(`^(?:${field.pattern})$`, "u");
    } catch {
      re = null; // a Python-only construct: the server checks it
    }
    if (re && !re.test(text)) return { value: undefined, error: `${label}: must match ${field.pattern}` };
  }
  return { value: text, error: null };
}

/**
 * A resource field bounded by both the template and the caller's policy:
 * {key, label, min, max, value, fixed} or null when the template does not offer it.
 */
export function resourceField(key, templateResource, policy) {
  if (!templateResource) return null;
  const min = key === "gpus" ? 0 : 1;
  const pmaxRaw = policy ? policy[POLICY_MAX[key]] : undefined;
  const pmax = Number.isFinite(Number(pmaxRaw)) && pmaxRaw !== null ? Number(pmaxRaw) : null;
  let max = templateResource.max ?? templateResource.default;
  if (pmax !== null) max = Math.min(max, pmax);
  max = Math.max(min, max);
  const value = Math.min(max, Math.max(min, Math.floor(templateResource.default)));
  return { key, label: RESOURCE_LABELS[key] ?? labelOf(key), min, max, value, fixed: min === max };
}

/** A choice list from the policy (["*"] or missing: free or absent). */
function policyChoices(list) {
  if (!Array.isArray(list) || !list.length || list.includes("*")) return null;
  return list.map(String);
}

/** The text shown on a file slot's drop zone: "*.json · up to 64 KiB · required · JSON checked against a schema". */
export function slotSummary(slot) {
  const bits = [slot.pattern];
  if (slot.max_size) bits.push(`up to ${formatBytes(slot.max_size)}`);
  bits.push(slot.required ? "required" : "optional");
  if (slot.multiple) bits.push("several files");
  if (slot.format) bits.push(slot.schema ? `${slot.format.toUpperCase()} checked against a schema` : slot.format.toUpperCase());
  return bits.join(" · ");
}

/**
 * The whole form model of a template for the caller (`me` from /api/v1/me):
 * {ref, version, params: [paramField], resources: [resourceField], partition: {choices, value},
 *  accounts, qos, gpuTypes, slots: [{name, key, label, pattern, max_size, required, multiple, summary, ...}]}.
 */
export function buildFormModel(template, me = null) {
  const policy = me?.policy ?? null;
  const res = normalizeResources(template.resources);
  const resources = [];
  for (const key of RESOURCE_KEYS) {
    const f = resourceField(key, res[key], policy);
    if (f) resources.push(f);
  }
  const partitions = policyChoices(policy?.partitions);
  const partitionDefault = template.partition ?? me?.default_partition ?? "";
  const slots = (template.files ?? []).map((s) => ({
    ...s,
    key: `files.${s.name}`,
    label: labelOf(s.name),
    summary: slotSummary(s),
  }));
  return {
    ref: template.ref ?? template.name,
    version: template.version ?? null,
    title: template.display_name || template.name,
    params: (template.parameters ?? []).map(paramField),
    resources,
    partition: {
      choices: partitions ? (partitions.includes(partitionDefault) || !partitionDefault ? partitions : [partitionDefault, ...partitions]) : null,
      value: partitionDefault,
    },
    accounts: policyChoices(policy?.accounts),
    qos: policyChoices(policy?.qos),
    gpuTypes: policyChoices(policy?.gpu_types),
    slots,
  };
}

/** Client-side check of a chosen file for a slot: {code, message} or null (the server checks again). */
export function checkFile(slot, file) {
  if (!globMatch(slot.pattern, file.name)) {
    return { code: "wrong_pattern", message: `${file.name} does not match ${slot.pattern}` };
  }
  if (slot.max_size && file.size > slot.max_size) {
    return {
      code: "too_big",
      message: `${file.name} is ${formatBytes(file.size)}; this slot takes up to ${formatBytes(slot.max_size)}`,
    };
  }
  return null;
}

/**
 * Builds the POST /api/v1/jobs body from the form values
 * `{params: {name: raw}, resources: {key: raw}, partition, account, qos, gpu_type, job_name}`
 * and the finished uploads per slot `{slot: [upload ids]}`, plus `busy` slots still
 * uploading. Returns {body, errors} with errors keyed like the API's `field`
 * ("parameters.n", "files.config", "cpus"...).
 */
export function buildJobRequest(model, values, uploads = {}, busy = new Set()) {
  const errors = {};
  const body = { template: model.ref, parameters: {}, files: {} };
  // Only user templates (~owner/name) keep numbered versions a job can pin; an admin
  // template's version is a label of the one file there is.
  if (String(model.ref ?? "").startsWith("~") && /^[0-9]+$/.test(String(model.version ?? ""))) {
    body.template_version = Number(model.version);
  }
  for (const f of model.params) {
    const { value, error } = checkParam(f, values.params?.[f.name]);
    if (error) errors[f.key] = error;
    else if (value !== undefined) body.parameters[f.name] = value;
  }
  for (const r of model.resources) {
    const raw = values.resources?.[r.key];
    if (raw === undefined || raw === null || String(raw).trim() === "") continue;
    const n = Number(raw);
    if (!Number.isInteger(n)) errors[r.key] = `${r.label}: a whole number`;
    else if (n < r.min || n > r.max) errors[r.key] = `${r.label}: between ${r.min} and ${r.max}`;
    else body[r.key] = n;
  }
  for (const [key, choices] of [
    ["partition", model.partition.choices],
    ["account", model.accounts],
    ["qos", model.qos],
    ["gpu_type", model.gpuTypes],
  ]) {
    const v = String(values[key] ?? "").trim();
    if (!v) continue;
    if (choices && !choices.includes(v)) errors[key] = `${labelOf(key)}: not allowed`;
    else if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(v)) errors[key] = `${labelOf(key)}: letters, digits, . _ - :`;
    else body[key] = v;
  }
  const jobName = String(values.job_name ?? "").trim();
  if (jobName) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(jobName)) errors.job_name = "Job name: up to 64 letters, digits, . _ -";
    else body.job_name = jobName;
  }
  for (const slot of model.slots) {
    const ids = uploads[slot.name] ?? [];
    if (busy.has(slot.name)) errors[slot.key] = `${slot.label}: wait until the upload has finished`;
    else if (slot.required && !ids.length) errors[slot.key] = `${slot.label}: a file is required (${slot.pattern})`;
    else if (!slot.multiple && ids.length > 1) errors[slot.key] = `${slot.label}: one file only`;
    if (ids.length) body.files[slot.name] = [...ids];
  }
  return { body, errors };
}

/**
 * Where an API error belongs in the form: a `field` such as "files.mesh",
 * "files.mesh[0]", "parameters.count", "cpus", "template" → the form key, or null.
 */
export function errorTarget(field, model) {
  if (!field || typeof field !== "string") return null;
  const m = /^(files|parameters)\.([A-Za-z0-9_-]+)/.exec(field);
  if (m) {
    const key = `${m[1]}.${m[2]}`;
    const known = m[1] === "files" ? model.slots.some((s) => s.key === key) : model.params.some((p) => p.key === key);
    return known ? key : null;
  }
  const base = field.split(/[.[]/)[0];
  if (model.resources.some((r) => r.key === base)) return base;
  if (["partition", "account", "qos", "gpu_type", "job_name"].includes(base)) return base;
  return null;
}

/** The messages of a validate answer per slot: {slot: [text]} (only the failing ones). */
export function validationMessages(result) {
  const out = {};
  for (const [slot, r] of Object.entries(result?.slots ?? {})) {
    if (r?.ok) continue;
    out[slot] = (r?.errors ?? []).map((e) => {
      const where = e.path && e.path !== "$" ? ` at ${e.path}` : "";
      const file = e.file ? `${e.file}: ` : "";
      return `${file}${e.message}${where}`;
    });
    if (!out[slot].length) out[slot] = ["not valid"];
  }
  return out;
}

/**
 * Form values from a previous job request (`GET /api/v1/jobs/{id}/request`, or the job
 * record itself for the resources): for "submit again".
 */
export function prefillValues(model, request) {
  const values = { params: {}, resources: {} };
  for (const f of model.params) {
    const v = request?.parameters?.[f.name];
    if (v === undefined) continue;
    values.params[f.name] = f.kind === "switch" ? Boolean(v) : String(v);
  }
  for (const r of model.resources) {
    const v = request?.[r.key];
    if (v !== undefined && v !== null) values.resources[r.key] = String(v);
  }
  for (const k of ["partition", "account", "qos", "gpu_type", "job_name"]) {
    if (request?.[k]) values[k] = String(request[k]);
  }
  return values;
}

// ---------------------------------------------------------------------------------
// Jobs

export const JOB_FINAL_STATES = Object.freeze(new Set(["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"]));

export function isJobFinal(state) {
  return JOB_FINAL_STATES.has(state);
}

const JOB_LABELS = {
  QUEUED: "Queued",
  RUNNING: "Running",
  CANCELLING: "Cancelling",
  COMPLETED: "Completed",
  FAILED: "Failed",
  CANCELLED: "Cancelled",
  TIMEOUT: "Timed out",
};

export function jobStateLabel(state) {
  return JOB_LABELS[state] ?? String(state ?? "Unknown");
}

export function canCancelJob(job) {
  return job?.state === "QUEUED" || job?.state === "RUNNING";
}

function ts(v) {
  const t = v ? Date.parse(v) : NaN;
  return Number.isNaN(t) ? null : t;
}

/**
 * Times of a job: {waitedSeconds (queued so far or until start), elapsedSeconds (running
 * time), remainingSeconds (before the time limit, while running), text}.
 */
export function jobTimes(job, nowMs) {
  const created = ts(job.created_at);
  const started = ts(job.started_at);
  const ended = ts(job.ended_at);
  const final = isJobFinal(job.state);
  const end = ended ?? (final ? null : nowMs);
  let waited = null;
  if (created !== null) waited = Math.max(0, ((started ?? end ?? created) - created) / 1000);
  let elapsed = null;
  if (started !== null) {
    elapsed = end !== null ? Math.max(0, (end - started) / 1000) : Number(job.runtime_seconds ?? 0);
  } else if (final && Number.isFinite(Number(job.runtime_seconds)) && job.runtime_seconds !== null) {
    elapsed = Number(job.runtime_seconds);
  }
  let remaining = null;
  const limit = Number(job.time_limit_minutes);
  if (!final && started !== null && Number.isFinite(limit) && limit > 0) {
    remaining = Math.max(0, (started + limit * 60000 - nowMs) / 1000);
  }
  let text;
  if (job.state === "QUEUED") text = `queued ${formatDuration(waited ?? 0)}`;
  else if (!final) {
    text = `running ${formatDuration(elapsed ?? 0)}`;
    if (remaining !== null) text += ` · ${formatDuration(remaining)} left`;
  } else text = elapsed !== null ? `ran ${formatDuration(elapsed)}` : "did not run";
  return { waitedSeconds: waited, elapsedSeconds: elapsed, remainingSeconds: remaining, text };
}

/** Merge one job into a Map id → job (a final state is sticky, like sessions). */
export function upsertJob(jobs, incoming) {
  const out = new Map(jobs);
  const prev = out.get(incoming.id);
  if (prev && isJobFinal(prev.state) && !isJobFinal(incoming.state)) return out;
  out.set(incoming.id, { ...prev, ...incoming });
  return out;
}

export function mergeJobList(jobs, list) {
  let out = new Map();
  for (const j of list) out = upsertJob(out.set(j.id, jobs.get(j.id) ?? j), j);
  for (const [id, j] of jobs) if (!out.has(id) && !isJobFinal(j.state)) out.set(id, j);
  return out;
}

/** Active jobs first, newest first. */
export function sortJobs(list) {
  return [...list].sort((a, b) => {
    const fa = isJobFinal(a.state) ? 1 : 0;
    const fb = isJobFinal(b.state) ? 1 : 0;
    if (fa !== fb) return fa - fb;
    return (ts(b.created_at) ?? 0) - (ts(a.created_at) ?? 0);
  });
}

/** "exit code 0", "exit code 2", "killed by signal 9", "" */
export function exitText(job) {
  if (job.signal) return `killed by signal ${job.signal}`;
  if (job.exit_code !== null && job.exit_code !== undefined) return `exit code ${job.exit_code}`;
  return "";
}

/** The file name a Content-Disposition header gives (RFC 6266 filename* first), or the fallback. */
export function dispositionName(header, fallback) {
  if (!header) return fallback;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      /* fall through */
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header) ?? /filename\s*=\s*([^;]+)/i.exec(header);
  return plain ? plain[1].trim() : fallback;
}
