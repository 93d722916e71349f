// vizdesk portal: the batch side's DOM glue. Template library (filters, clone/edit of
// the user's own templates), the job form generated from a template (jobform.js), file
// slots with tus uploads (uploads.js), preview (dry run) then submit, the job list and
// the job page kept live by `job` events of /api/v1/events (no polling). The output tail
// is re-fetched only while a job page is open and its job RUNNING: on each `job` event
// and every 3 s (the daemon sends no event per output line).

import { ApiError } from "./api.js";
import {
  buildFormModel,
  buildJobRequest,
  canCancelJob,
  checkFile,
  dispositionName,
  errorTarget,
  exitText,
  formatBytes,
  isJobFinal,
  jobStateLabel,
  jobTimes,
  libraryFacets,
  mergeJobList,
  prefillValues,
  resourcesSummary,
  sortJobs,
  templateMatches,
  upsertJob,
  validationMessages,
} from "./jobform.js";
import { formatDuration } from "./state.js";
import { UploadManager } from "./uploads.js";
import { formatSpeed, uploadActions, uploadEta, uploadFraction, uploadSpeed } from "./uploadstate.js";

const $ = (id) => document.getElementById(id);
const OUTPUT_TAIL_BYTES = 64 * 1024;
const OUTPUT_REFRESH_MS = 3000;

const UPLOAD_LABELS = {
  refused: "Refused",
  queued: "Waiting",
  uploading: "Uploading",
  retrying: "Reconnecting",
  paused: "Paused",
  auth: "Needs sign-in",
  done: "Uploaded",
  failed: "Failed",
  cancelled: "Cancelled",
};

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function fact(dl, term, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(el("dt", { text: term }), el("dd", { text: String(value) }));
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export class Batch {
  /**
   * @param {object} o
   * @param {import("./api.js").Api} o.api
   * @param {() => string|null} o.getToken
   * @param {() => object|null} o.getMe /api/v1/me
   * @param {(name: string) => void} o.showView
   * @param {(text: string) => void} o.announce
   * @param {(text: string) => void} o.showError
   */
  constructor({ api, getToken, getMe, showView, announce, showError }) {
    this.api = api;
    this.getMe = getMe;
    this.showView = showView;
    this.announce = announce;
    this.showError = showError;
    this.templates = [];
    this.templatesLoaded = false;
    this.jobs = new Map();
    this.jobsLoaded = false;
    this.model = null; // form model of the open template
    this.template = null;
    this.prefill = null;
    this.preview = null; // {body} of the last good preview
    this.jobId = null; // open job page
    this.outputTimer = null;
    this.outputAbort = null;
    this.editor = null; // {mode: "clone"|"edit", ref}
    this.uploads = new UploadManager({ getToken, onChange: (e) => this.renderUpload(e) });
    this.wired = false;
  }

  wire() {
    if (this.wired) return;
    this.wired = true;
    const refilter = () => this.renderLibrary();
    $("library-q").addEventListener("input", refilter);
    $("library-category").addEventListener("change", refilter);
    $("library-tag").addEventListener("change", refilter);
    $("library-filters").addEventListener("submit", (ev) => ev.preventDefault());
    $("job-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.doPreview();
    });
    $("job-form").addEventListener("input", (ev) => this.onFormInput(ev));
    $("job-form").addEventListener("change", (ev) => this.onFormInput(ev));
    $("submit-button").addEventListener("click", () => this.doSubmit());
    $("preview-close").addEventListener("click", () => {
      $("preview-panel").hidden = true;
      $("preview-button").focus();
    });
    $("job-cancel").addEventListener("click", () => this.cancelJob());
    $("job-again").addEventListener("click", () => this.submitAgain());
    $("results-zip").addEventListener("click", () => this.downloadZip());
    $("editor-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.saveEditor();
    });
    $("editor-cancel").addEventListener("click", () => this.closeEditor());
  }

  reset() {
    this.templates = [];
    this.templatesLoaded = false;
    this.jobs = new Map();
    this.jobsLoaded = false;
    this.closeJob();
  }

  // ---------------------------------------------------------------- routes

  /** Shows a batch route: ["templates"], ["new", ref], ["jobs"], ["jobs", id]. Returns true when handled. */
  async route(parts) {
    this.wire();
    const [head, ...rest] = parts;
    if (head !== "jobs" || !rest.length) this.closeJob();
    if (head === "templates") {
      this.showView("library");
      await this.loadTemplates();
      return true;
    }
    if (head === "new" && rest.length) {
      await this.openForm(decodeURIComponent(rest.join("/")));
      return true;
    }
    if (head === "jobs" && rest.length) {
      await this.openJob(decodeURIComponent(rest[0]));
      return true;
    }
    if (head === "jobs") {
      this.showView("jobs");
      await this.loadJobs();
      return true;
    }
    return false;
  }

  handleError(exc, where = null) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    const msg = exc instanceof ApiError ? exc.message : String(exc?.message ?? exc);
    if (where) {
      where.textContent = msg;
      where.hidden = false;
    } else this.showError(msg);
  }

  // ---------------------------------------------------------------- library

  async loadTemplates(force = false) {
    if (this.templatesLoaded && !force) {
      this.renderLibrary();
      return;
    }
    try {
      this.templates = await this.api.listTemplates();
      this.templatesLoaded = true;
    } catch (exc) {
      this.handleError(exc);
      return;
    }
    const { categories, tags } = libraryFacets(this.templates);
    for (const [id, values, all] of [
      ["library-category", categories, "All categories"],
      ["library-tag", tags, "All tags"],
    ]) {
      const sel = $(id);
      const keep = sel.value;
      sel.replaceChildren(el("option", { value: "", text: all }), ...values.map((v) => el("option", { value: v, text: v })));
      sel.value = values.includes(keep) ? keep : "";
    }
    this.renderLibrary();
  }

  renderLibrary() {
    const filter = { q: $("library-q").value, category: $("library-category").value, tag: $("library-tag").value };
    const shown = this.templates.filter((t) => templateMatches(t, filter));
    const list = $("template-list");
    list.replaceChildren(...shown.map((t) => this.templateCard(t)));
    $("library-empty").hidden = shown.length > 0;
    $("library-count").textContent = `${shown.length} of ${this.templates.length} templates`;
  }

  templateCard(t) {
    const li = $("template-card").content.firstElementChild.cloneNode(true);
    const part = (n) => li.querySelector(`[data-part="${n}"]`);
    li.dataset.ref = t.ref;
    const title = t.display_name || t.name;
    part("name").textContent = title;
    const src = part("source");
    src.textContent = t.source === "admin" ? "site template · read-only" : t.editable ? "yours" : `shared by ${t.owner}`;
    src.className = `badge badge-${t.source === "admin" ? "ended" : "ready"}`;
    part("ref").textContent = `${t.ref} · version ${t.version || "?"}${t.category ? ` · ${t.category}` : ""}${t.tags?.length ? ` · ${t.tags.map((x) => `#${x}`).join(" ")}` : ""}`;
    part("description").textContent = t.description || "";
    const facts = part("facts");
    fact(facts, "Image", t.image || "none (runs on the node)");
    fact(facts, "Resources", resourcesSummary(t.resources));
    fact(facts, "Files", (t.files ?? []).map((f) => `${f.name} (${f.pattern}${f.required ? "" : ", optional"})`).join(", "));
    fact(facts, "Parameters", (t.parameters ?? []).map((p) => p.name).join(", "));
    fact(facts, "Results", (t.outputs ?? []).join(", "));
    const use = part("use");
    use.href = `#/new/${encodeURIComponent(t.ref)}`;
    use.setAttribute("aria-label", `Use ${title}`);
    part("clone").setAttribute("aria-label", `Clone ${title}`);
    part("clone").addEventListener("click", () => this.openEditor("clone", t));
    const edit = part("edit");
    const del = part("delete");
    edit.hidden = !t.editable;
    del.hidden = !t.editable;
    edit.setAttribute("aria-label", `Edit ${title}`);
    del.setAttribute("aria-label", `Delete ${title}`);
    edit.addEventListener("click", () => this.openEditor("edit", t));
    del.addEventListener("click", () => this.deleteTemplate(t, del));
    return li;
  }

  async openEditor(mode, t) {
    this.editor = { mode, ref: t.ref };
    $("template-editor").hidden = false;
    $("editor-error").hidden = true;
    $("editor-title").textContent = mode === "clone" ? `Clone “${t.display_name || t.name}”` : `Edit “${t.display_name || t.name}”`;
    $("editor-name-field").hidden = mode !== "clone";
    $("editor-definition-field").hidden = mode !== "edit";
    $("editor-name").value = mode === "clone" ? `${t.name}-copy` : "";
    $("editor-visibility").value = t.visibility === "groups" ? "groups" : "private";
    if (mode === "edit") {
      try {
        const full = await this.api.getTemplate(t.ref);
        $("editor-definition").value = JSON.stringify(full.definition ?? {}, null, 2);
      } catch (exc) {
        this.handleError(exc, $("editor-error"));
      }
    }
    (mode === "clone" ? $("editor-name") : $("editor-definition")).focus();
  }

  closeEditor() {
    $("template-editor").hidden = true;
    const ref = this.editor?.ref;
    this.editor = null;
    document.querySelector(`[data-ref="${CSS.escape(ref ?? "")}"] [data-part="use"]`)?.focus();
  }

  async saveEditor() {
    if (!this.editor) return;
    const err = $("editor-error");
    err.hidden = true;
    const visibility = $("editor-visibility").value;
    try {
      if (this.editor.mode === "clone") {
        const name = $("editor-name").value.trim();
        if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(name)) {
          err.textContent = "Name: letters, digits, - and _ (up to 64)";
          err.hidden = false;
          $("editor-name").setAttribute("aria-invalid", "true");
          return;
        }
        await this.api.cloneTemplate(this.editor.ref, { name, visibility });
      } else {
        let definition;
        try {
          definition = JSON.parse($("editor-definition").value);
        } catch (exc) {
          err.textContent = `Definition: not valid JSON (${exc.message})`;
          err.hidden = false;
          return;
        }
        await this.api.updateTemplate(this.editor.ref, { definition, visibility });
      }
    } catch (exc) {
      this.handleError(exc, err);
      return;
    }
    this.announce("Template saved");
    this.closeEditor();
    await this.loadTemplates(true);
  }

  async deleteTemplate(t, button) {
    if (button.dataset.confirm !== "1") {
      button.dataset.confirm = "1";
      button.textContent = "Confirm delete";
      setTimeout(() => {
        button.dataset.confirm = "";
        button.textContent = "Delete";
      }, 5000);
      return;
    }
    try {
      await this.api.deleteTemplate(t.ref);
      this.announce(`Deleted ${t.ref}`);
      await this.loadTemplates(true);
      $("library-q").focus();
    } catch (exc) {
      this.handleError(exc);
    }
  }

  // ---------------------------------------------------------------- job form

  async openForm(ref, prefill = null) {
    this.showView("jobform");
    $("preview-panel").hidden = true;
    $("jobform-errors").hidden = true;
    let template;
    try {
      template = await this.api.getTemplate(ref);
    } catch (exc) {
      this.handleError(exc, $("jobform-errors"));
      return;
    }
    this.template = template;
    this.model = buildFormModel(template, this.getMe());
    this.prefill = prefill;
    this.preview = null;
    document.title = `New job: ${this.model.title} — vizdesk`;
    $("jobform-title").textContent = `New job: ${this.model.title}`;
    $("jobform-desc").textContent = [template.description, template.image ? `image ${template.image}` : "", `version ${template.version || "?"}`]
      .filter(Boolean)
      .join(" · ");
    this.renderParams(prefill?.values ?? null);
    this.renderResources(prefill?.values ?? null);
    this.renderSlots();
    $("jobform-status").textContent = prefill?.note ?? "";
  }

  inputId(key) {
    return `jf-${key.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  }

  fieldBox(key, labelText, control, helpText) {
    const id = this.inputId(key);
    control.id = id;
    control.dataset.key = key;
    const help = el("p", { class: "help", id: `${id}-help`, text: helpText || "" });
    const err = el("p", { class: "field-error", id: `${id}-error`, role: "alert" });
    err.hidden = true;
    control.setAttribute("aria-describedby", `${id}-help ${id}-error`);
    const box = el("div", { class: "field", "data-field": key });
    if (control.type === "checkbox") {
      box.classList.add("switch-field");
      box.append(el("span", { class: "switch" }, control, el("label", { for: id, text: labelText })), help, err);
    } else {
      box.append(el("label", { for: id, text: labelText }), control, help, err);
    }
    return box;
  }

  renderParams(values) {
    const list = $("param-list");
    list.replaceChildren();
    for (const f of this.model.params) {
      let control;
      if (f.kind === "select") {
        control = el("select", { name: f.name, required: f.required });
        if (!f.required || f.value === "") control.append(el("option", { value: "", text: f.required ? "Choose…" : "(template default)" }));
        for (const c of f.choices) control.append(el("option", { value: c, text: c }));
        control.value = values?.params?.[f.name] ?? f.value;
      } else if (f.kind === "switch") {
        control = el("input", { type: "checkbox", name: f.name, role: "switch" });
        control.checked = values?.params?.[f.name] ?? f.value;
      } else {
        control = el("input", {
          type: f.inputType,
          name: f.name,
          required: f.required,
          min: f.min,
          max: f.max,
          step: f.step,
          maxlength: f.maxLength,
          inputmode: f.kind === "number" ? (f.type === "int" ? "numeric" : "decimal") : null,
          autocomplete: "off",
          spellcheck: "false",
        });
        control.value = values?.params?.[f.name] ?? f.value;
      }
      control.dataset.group = "param";
      control.dataset.name = f.name;
      list.append(this.fieldBox(f.key, f.label + (f.required ? " (required)" : ""), control, f.help));
    }
    $("jobform-params").hidden = this.model.params.length === 0;
  }

  renderResources(values) {
    const list = $("resource-list");
    list.replaceChildren();
    for (const r of this.model.resources) {
      const control = el("input", { type: "number", min: r.min, max: r.max, step: 1, inputmode: "numeric", readonly: r.fixed });
      control.value = values?.resources?.[r.key] ?? String(r.value);
      control.dataset.group = "resource";
      control.dataset.name = r.key;
      const help = r.fixed ? `fixed by the template: ${r.value}` : `${r.min}–${r.max}${r.key === "time_limit_minutes" ? ` (up to ${formatDuration(r.max * 60)})` : ""}`;
      list.append(this.fieldBox(r.key, r.label, control, help));
    }
    const choice = (key, label, choices, value, helpText) => {
      let control;
      if (choices) {
        control = el("select", { name: key });
        if (!choices.includes(value)) control.append(el("option", { value: "", text: "(default)" }));
        for (const c of choices) control.append(el("option", { value: c, text: c }));
        control.value = value ?? "";
      } else {
        control = el("input", { type: "text", name: key, autocomplete: "off", placeholder: value ? `default: ${value}` : "default" });
      }
      control.dataset.group = "option";
      control.dataset.name = key;
      list.append(this.fieldBox(key, label, control, helpText));
    };
    choice("partition", "Partition", this.model.partition.choices, values?.partition ?? this.model.partition.value, "Partitions your groups may use");
    if (this.model.accounts) choice("account", "Account", this.model.accounts, values?.account ?? "", "Charged for the job");
    if (this.model.qos) choice("qos", "QOS", this.model.qos, values?.qos ?? "", "");
    if (this.model.gpuTypes) choice("gpu_type", "GPU type", this.model.gpuTypes, values?.gpu_type ?? "", "");
    const name = el("input", { type: "text", name: "job_name", autocomplete: "off", maxlength: 64 });
    name.value = values?.job_name ?? "";
    name.dataset.group = "option";
    name.dataset.name = "job_name";
    list.append(this.fieldBox("job_name", "Job name (optional)", name, "Shown in Slurm; letters, digits, . _ -"));
  }

  renderSlots() {
    const list = $("slot-list");
    list.replaceChildren();
    const ref = this.model.ref;
    for (const slot of this.model.slots) {
      const box = $("slot-template").content.firstElementChild.cloneNode(true);
      const part = (n) => box.querySelector(`[data-part="${n}"]`);
      const id = this.inputId(slot.key);
      box.dataset.slot = slot.name;
      box.dataset.field = slot.key;
      part("label").textContent = `${slot.label}${slot.required ? " (required)" : ""}`;
      part("label").id = `${id}-label`;
      part("summary").textContent = slot.summary;
      part("summary").id = `${id}-summary`;
      part("description").textContent = slot.description || "";
      const input = part("input");
      input.id = id;
      input.multiple = Boolean(slot.multiple);
      input.setAttribute("aria-labelledby", `${id}-label ${id}-choose`);
      input.setAttribute("aria-describedby", `${id}-summary ${id}-error`);
      const m = /^\*(\.[A-Za-z0-9]+)$/.exec(slot.pattern);
      if (m) input.accept = m[1];
      const choose = part("choose");
      choose.htmlFor = id;
      choose.id = `${id}-choose`;
      choose.textContent = slot.multiple ? `Choose files for ${slot.label}` : `Choose a file for ${slot.label}`;
      part("error").id = `${id}-error`;
      input.addEventListener("change", () => {
        this.addFiles(slot, [...input.files]);
        input.value = "";
      });
      const zone = part("zone");
      zone.addEventListener("dragover", (ev) => {
        ev.preventDefault();
        zone.classList.add("dragging");
      });
      zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
      zone.addEventListener("drop", (ev) => {
        ev.preventDefault();
        zone.classList.remove("dragging");
        this.addFiles(slot, [...(ev.dataTransfer?.files ?? [])]);
      });
      const pending = this.uploads.unfinished(ref).filter((r) => r.slot === slot.name);
      const livePending = pending.filter((r) => !this.uploads.forTemplate(ref).some((e) => e.slot === r.slot && e.name === r.name && e.size === r.size));
      if (livePending.length) {
        const p = part("pending");
        p.hidden = false;
        p.textContent = `Interrupted: ${livePending.map((r) => `${r.name} (${formatBytes(r.size)})`).join(", ")}. Choose or drop the same file again: it resumes where it stopped.`;
      }
      list.append(box);
    }
    $("jobform-files").hidden = this.model.slots.length === 0;
    // finished uploads of this template from before a reload are still usable
    if (!this.uploads.forTemplate(ref).length) this.uploads.restoreDone(ref);
    for (const e of this.uploads.forTemplate(ref)) this.renderUpload(e);
  }

  addFiles(slot, files) {
    if (!files.length) return;
    this.clearFieldError(slot.key);
    this.preview = null;
    $("preview-panel").hidden = true;
    const ref = this.model.ref;
    if (!slot.multiple) {
      // one file per slot: a new one replaces a finished or refused one
      for (const e of this.uploads.forTemplate(ref)) {
        if (e.slot === slot.name && !["uploading", "retrying", "queued", "paused", "auth"].includes(e.state)) this.removeUpload(e.key);
      }
      files = files.slice(0, 1);
    }
    for (const file of files) {
      const check = checkFile(slot, file);
      this.uploads.add({ slot: slot.name, file, template: ref, check });
      if (check) this.announce(`${file.name} refused: ${check.message}`);
    }
    const box = document.querySelector(`[data-slot="${CSS.escape(slot.name)}"] [data-part="pending"]`);
    if (box) box.hidden = true;
  }

  removeUpload(key) {
    this.uploads.remove(key);
    document.querySelector(`[data-upload="${CSS.escape(key)}"]`)?.remove();
  }

  renderUpload(e) {
    const box = document.querySelector(`#slot-list [data-slot="${CSS.escape(e.slot)}"]`);
    if (!box || !this.model || !this.uploads.forTemplate(this.model.ref).some((x) => x.key === e.key)) return;
    let li = box.querySelector(`[data-upload="${CSS.escape(e.key)}"]`);
    const part = (n) => li.querySelector(`[data-part="${n}"]`);
    if (!li) {
      li = $("upload-template").content.firstElementChild.cloneNode(true);
      li.dataset.upload = e.key;
      box.querySelector('[data-part="uploads"]').append(li);
      part("pause").addEventListener("click", () => this.uploads.pause(e.key));
      part("resume").addEventListener("click", () => this.uploads.resume(e.key));
      part("cancel").addEventListener("click", () => this.uploads.cancel(e.key));
      part("remove").addEventListener("click", () => {
        this.removeUpload(e.key);
        box.querySelector('[data-part="input"]')?.focus();
      });
      for (const b of ["pause", "resume", "cancel", "remove"]) part(b).setAttribute("aria-label", `${part(b).textContent} ${e.name}`);
      part("bar").setAttribute("aria-label", `Upload of ${e.name}`);
    }
    li.dataset.state = e.state;
    li.dataset.offset = String(e.offset);
    li.dataset.resumedFrom = e.resumedFrom === null ? "" : String(e.resumedFrom);
    li.dataset.uploadId = e.uploadId ?? "";
    part("name").textContent = e.name;
    const st = part("state");
    st.textContent = UPLOAD_LABELS[e.state] ?? e.state;
    st.className = `badge upload-${e.state}`;
    const bar = part("bar");
    bar.value = uploadFraction(e);
    bar.hidden = e.state === "refused";
    const speed = uploadSpeed(e);
    const eta = uploadEta(e);
    let stats = `${formatBytes(e.offset)} of ${formatBytes(e.size)}`;
    if (e.state === "uploading" && speed) stats += ` · ${formatSpeed(speed)} · ${formatDuration(eta)} left`;
    if (e.resumedFrom) stats += ` · resumed at ${formatBytes(e.resumedFrom)}`;
    if (e.restored) stats += " · uploaded before the page reloaded";
    part("stats").textContent = e.state === "refused" ? formatBytes(e.size) : stats;
    const acts = uploadActions(e.state);
    for (const b of ["pause", "resume", "cancel", "remove"]) part(b).hidden = !acts[b];
    const err = part("error");
    err.hidden = !e.error;
    err.textContent = e.error ?? "";
    if (e.state === "refused" || (e.state === "done" && e.errorCode)) this.setFieldError(`files.${e.slot}`, e.error);
    if (e.state === "done" && !e.errorCode) this.announce(`${e.name} uploaded`);
  }

  values() {
    const v = { params: {}, resources: {} };
    for (const c of $("job-form").querySelectorAll("[data-group]")) {
      const val = c.type === "checkbox" ? c.checked : c.value;
      if (c.dataset.group === "param") v.params[c.dataset.name] = val;
      else if (c.dataset.group === "resource") v.resources[c.dataset.name] = val;
      else v[c.dataset.name] = val;
    }
    return v;
  }

  setFieldError(key, message) {
    const box = document.querySelector(`#job-form [data-field="${CSS.escape(key)}"]`);
    if (!box) return false;
    const err = box.querySelector(".field-error:not(.small)") ?? box.querySelector(".field-error");
    err.textContent = message;
    err.hidden = !message;
    const control = box.querySelector("input:not([type=file]), select, textarea") ?? box.querySelector("input");
    if (control) control.setAttribute("aria-invalid", message ? "true" : "false");
    box.classList.toggle("invalid", Boolean(message));
    return true;
  }

  clearFieldError(key) {
    this.setFieldError(key, "");
  }

  clearErrors() {
    for (const box of $("job-form").querySelectorAll("[data-field]")) this.clearFieldError(box.dataset.field);
    $("jobform-errors").hidden = true;
  }

  onFormInput(ev) {
    const c = ev.target;
    if (!c?.dataset?.group) return;
    this.preview = null;
    if (c.dataset.group === "param") {
      const f = this.model.params.find((p) => p.name === c.dataset.name);
      if (!f) return;
      const { body, errors } = buildJobRequest({ ...this.model, resources: [], slots: [], params: [f] }, this.values());
      void body;
      this.setFieldError(f.key, errors[f.key] ?? "");
    } else if (c.dataset.group === "resource") {
      const r = this.model.resources.find((x) => x.key === c.dataset.name);
      const { errors } = buildJobRequest({ ...this.model, params: [], slots: [], resources: [r] }, this.values());
      this.setFieldError(r.key, errors[r.key] ?? "");
    }
  }

  showErrors(errors, summary) {
    let first = null;
    for (const [key, msg] of Object.entries(errors)) {
      if (this.setFieldError(key, msg) && !first) first = key;
    }
    const el2 = $("jobform-errors");
    el2.textContent = summary ?? `Check the form: ${Object.values(errors).join("; ")}`;
    el2.hidden = false;
    if (first) {
      const box = document.querySelector(`#job-form [data-field="${CSS.escape(first)}"]`);
      box?.querySelector("input, select, textarea")?.focus();
    }
  }

  /** Form → body; false (and errors shown) when the form or the uploads are not ready. */
  requestBody() {
    this.clearErrors();
    const { ids, busy } = this.uploads.collect(this.model.ref);
    const { body, errors } = buildJobRequest(this.model, this.values(), ids, busy);
    // refused files stay refused: nothing is submitted with one
    for (const e of this.uploads.forTemplate(this.model.ref)) {
      if (e.state === "refused" || (e.state === "done" && e.errorCode)) errors[`files.${e.slot}`] = e.error;
    }
    if (Object.keys(errors).length) {
      this.showErrors(errors);
      return null;
    }
    return body;
  }

  async serverValidate(body) {
    if (!this.model.slots.length) return true;
    try {
      const res = await this.api.validateTemplate(this.model.ref, { files: body.files, parameters: body.parameters });
      if (res?.valid === false) {
        const msgs = validationMessages(res);
        const errors = {};
        for (const [slot, list] of Object.entries(msgs)) errors[`files.${slot}`] = list.join("; ");
        this.showErrors(errors, "Some files were refused by the template's checks.");
        return false;
      }
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 405)) return true; // no validate endpoint: the dry run checks
      this.placeApiError(exc);
      return false;
    }
    return true;
  }

  placeApiError(exc) {
    if (exc instanceof ApiError && exc.info.signIn) return;
    const target = exc instanceof ApiError ? errorTarget(exc.info.field, this.model) : null;
    const msg = exc instanceof ApiError ? exc.message : String(exc);
    if (target) this.showErrors({ [target]: msg }, msg);
    else {
      $("jobform-errors").textContent = msg;
      $("jobform-errors").hidden = false;
    }
  }

  async doPreview() {
    if (!this.model) return;
    const body = this.requestBody();
    if (!body) return;
    $("jobform-status").textContent = "Checking…";
    $("preview-button").disabled = true;
    try {
      if (!(await this.serverValidate(body))) return;
      const res = await this.api.submitJob(body, { dryRun: true });
      this.preview = { body };
      this.renderPreview(res);
    } catch (exc) {
      this.placeApiError(exc);
    } finally {
      $("preview-button").disabled = false;
      $("jobform-status").textContent = "";
    }
  }

  renderPreview(res) {
    $("preview-options").textContent = (res.sbatch_options ?? []).join("\n");
    $("preview-env").textContent = (res.environment ?? []).join(" ");
    $("preview-script").textContent = res.script ?? "";
    $("preview-script-path").textContent = res.script_path ? `(${res.script_path})` : "";
    const est = res.estimate;
    let text;
    if (est && (est.start_time || est.message)) {
      text = `Slurm's estimate: ${est.start_time ? `starts ${new Date(est.start_time).toLocaleString()}` : ""}${est.nodes ? ` on ${est.nodes}` : ""}${est.processors ? ` (${est.processors} processors)` : ""}${est.partition ? `, partition ${est.partition}` : ""}${est.message ? ` — ${est.message}` : ""}`;
    } else text = `Slurm gave no start estimate${res.estimate_error ? `: ${res.estimate_error}` : ""}.`;
    if (res.workdir) text += ` Runs in ${res.workdir}.`;
    $("preview-estimate").textContent = text;
    $("preview-panel").hidden = false;
    $("preview-panel").focus();
    this.announce("Preview ready: check it, then submit");
  }

  async doSubmit() {
    if (!this.preview) {
      await this.doPreview();
      if (!this.preview) return;
    }
    const body = this.requestBody();
    if (!body) return;
    if (JSON.stringify(body) !== JSON.stringify(this.preview.body)) {
      $("jobform-status").textContent = "The form changed since the preview: preview again.";
      $("preview-panel").hidden = true;
      this.preview = null;
      return;
    }
    $("submit-button").disabled = true;
    try {
      const job = await this.api.submitJob(body);
      this.jobs = upsertJob(this.jobs, job);
      this.uploads.clearTemplate(this.model.ref);
      this.announce(`Job submitted: ${job.id}`);
      window.location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (exc) {
      $("preview-panel").hidden = true;
      this.preview = null;
      this.placeApiError(exc);
    } finally {
      $("submit-button").disabled = false;
    }
  }

  // ---------------------------------------------------------------- jobs

  async loadJobs() {
    try {
      const list = await this.api.listJobs();
      this.jobs = mergeJobList(this.jobs, list);
      this.jobsLoaded = true;
    } catch (exc) {
      this.handleError(exc);
    }
    this.renderJobs();
  }

  jobTitle(j) {
    return `${j.job_name || j.template || "job"} · ${j.id.slice(0, 8)}`;
  }

  renderJobs() {
    const rows = $("job-rows");
    const now = Date.now();
    const sorted = sortJobs([...this.jobs.values()]);
    const existing = new Map([...rows.children].map((tr) => [tr.dataset.jobId, tr]));
    const wanted = sorted.map((j) => {
      let tr = existing.get(j.id);
      if (!tr) {
        tr = el("tr", { "data-job-id": j.id });
        tr.append(el("td"), el("td"), el("td"), el("td"));
      }
      existing.delete(j.id);
      const [c0, c1, c2, c3] = tr.children;
      if (!c0.firstChild) c0.append(el("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }));
      c0.firstChild.textContent = this.jobTitle(j);
      c1.replaceChildren(el("span", { class: `badge job-${j.state.toLowerCase()}`, text: jobStateLabel(j.state) }));
      if (j.state === "QUEUED" && j.reason) c1.append(el("span", { class: "muted small", text: ` ${j.reason}` }));
      c2.textContent = jobTimes(j, now).text;
      c3.textContent = exitText(j);
      tr.dataset.state = j.state;
      return tr;
    });
    for (const tr of existing.values()) tr.remove();
    wanted.forEach((tr, i) => {
      if (rows.children[i] !== tr) rows.insertBefore(tr, rows.children[i] ?? null);
    });
    $("no-jobs").hidden = sorted.length > 0;
    $("job-table").hidden = sorted.length === 0;
  }

  /** A `job` event of the events stream. */
  onJobEvent(job) {
    const before = this.jobs.get(job.id);
    this.jobs = upsertJob(this.jobs, job);
    const j = this.jobs.get(job.id);
    if (before?.state !== j.state) this.announce(`${this.jobTitle(j)}: ${jobStateLabel(j.state)}`);
    this.renderJobs();
    if (this.jobId === job.id) {
      this.renderJob();
      this.refreshOutput();
      if (isJobFinal(j.state) || j.state === "RUNNING") this.refreshFiles();
    }
  }

  onUploadEvent(view) {
    this.uploads.serverEvent(view);
  }

  /** After the events stream (re)connected: catch up with what changed meanwhile. */
  resync() {
    if (this.jobsLoaded) this.loadJobs();
    if (this.jobId) this.api.getJob(this.jobId).then((j) => this.onJobEvent(j), () => {});
  }

  tick() {
    const now = Date.now();
    for (const tr of $("job-rows").children) {
      const j = this.jobs.get(tr.dataset.jobId);
      if (j && !isJobFinal(j.state)) tr.children[2].textContent = jobTimes(j, now).text;
    }
    if (this.jobId) this.renderJobTimes();
  }

  async openJob(id) {
    this.closeJob();
    this.jobId = id;
    this.showView("job");
    $("job-output").textContent = "";
    $("results-rows").replaceChildren();
    $("job-action-status").textContent = "";
    try {
      const job = await this.api.getJob(id);
      if (this.jobId !== id) return;
      this.jobs = upsertJob(this.jobs, job);
    } catch (exc) {
      this.handleError(exc);
      return;
    }
    this.renderJob();
    this.refreshOutput();
    this.refreshFiles();
    this.outputTimer = setInterval(() => {
      const j = this.jobs.get(this.jobId);
      if (j?.state === "RUNNING" && document.visibilityState !== "hidden") this.refreshOutput();
    }, OUTPUT_REFRESH_MS);
  }

  closeJob() {
    clearInterval(this.outputTimer);
    this.outputTimer = null;
    this.outputAbort?.abort();
    this.outputAbort = null;
    this.jobId = null;
  }

  renderJob() {
    const j = this.jobs.get(this.jobId);
    if (!j) return;
    $("job-title").textContent = this.jobTitle(j);
    document.title = `${this.jobTitle(j)} — vizdesk`;
    const badge = $("job-badge");
    badge.textContent = jobStateLabel(j.state);
    badge.className = `badge job-${j.state.toLowerCase()}`;
    $("job-view").dataset.state = j.state;
    $("job-view").dataset.jobId = j.id;
    const reason = $("job-reason");
    const r = j.state === "QUEUED" ? (j.reason ? `Waiting in Slurm: ${j.reason}` : "Waiting in Slurm") : j.reason || "";
    reason.textContent = r;
    reason.hidden = !r;
    const dl = $("job-facts");
    dl.replaceChildren();
    fact(dl, "Template", `${j.template ?? ""}${j.template_version ? ` (version ${j.template_version})` : ""}`);
    fact(dl, "Slurm job", j.job_id);
    fact(dl, "Time", "");
    dl.lastChild?.remove();
    dl.append(el("dt", { text: "Time" }), el("dd", { id: "job-times" }));
    fact(dl, "Exit", exitText(j));
    fact(dl, "Node", j.node);
    fact(dl, "Partition", j.partition);
    const res = [j.cpus && `${j.cpus} CPUs`, j.memory_gb && `${j.memory_gb} GB`, j.gpus && `${j.gpus} GPUs`, j.nodes > 1 && `${j.nodes} nodes`, j.ntasks > 1 && `${j.ntasks} tasks`, j.time_limit_minutes && `limit ${formatDuration(j.time_limit_minutes * 60)}`].filter(Boolean);
    fact(dl, "Resources", res.join(" · "));
    fact(dl, "Input files", Object.entries(j.files ?? {}).map(([s, names]) => `${s}: ${names.join(", ")}`).join("; "));
    fact(dl, "Directory", j.workdir);
    fact(dl, "Submitted", j.created_at ? new Date(j.created_at).toLocaleString() : "");
    this.renderJobTimes();
    $("job-cancel").hidden = !canCancelJob(j);
    $("job-again").hidden = !j.template;
    $("output-state").textContent = j.state === "RUNNING" ? "following live" : isJobFinal(j.state) ? "final" : "not started";
  }

  renderJobTimes() {
    const j = this.jobs.get(this.jobId);
    const t = $("job-times");
    if (j && t) t.textContent = jobTimes(j, Date.now()).text;
  }

  async refreshOutput() {
    const id = this.jobId;
    const j = this.jobs.get(id);
    if (!id || !j || j.state === "QUEUED") return;
    this.outputAbort?.abort();
    const abort = new AbortController();
    this.outputAbort = abort;
    try {
      const out = await this.api.jobOutput(id, OUTPUT_TAIL_BYTES, { signal: abort.signal });
      if (this.jobId !== id) return;
      const pre = $("job-output");
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      pre.textContent = (out.truncated ? "…\n" : "") + out.text;
      pre.dataset.size = String(out.size);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    } catch (exc) {
      if (exc?.name === "AbortError") return;
      if (exc instanceof ApiError && exc.status === 404) return; // no output yet
      if (!(exc instanceof ApiError && exc.info.signIn)) $("output-state").textContent = exc.message ?? String(exc);
    }
  }

  async refreshFiles() {
    const id = this.jobId;
    if (!id) return;
    let data;
    try {
      data = await this.api.jobFiles(id);
    } catch (exc) {
      if (exc instanceof ApiError && (exc.status === 404 || exc.status === 409)) {
        $("results-empty").hidden = false;
        $("results-table").hidden = true;
        $("results-zip").hidden = true;
        return;
      }
      this.handleError(exc);
      return;
    }
    if (this.jobId !== id) return;
    const files = (data.files ?? []).filter((f) => (f.type ?? "file") === "file");
    // results (files matching an output pattern) first
    files.sort((a, b) => (b.outputs?.length ? 1 : 0) - (a.outputs?.length ? 1 : 0) || a.path.localeCompare(b.path));
    $("results-rows").replaceChildren(
      ...files.map((f) => {
        const button = el("button", { type: "button", class: "small", text: "Download", "aria-label": `Download ${f.path}` });
        button.addEventListener("click", () => this.downloadFile(f.path, button));
        return el(
          "tr",
          { "data-path": f.path, "data-size": f.size },
          el("td", {}, el("span", { class: "mono", text: f.path }), f.outputs?.length ? el("span", { class: "badge badge-ready small", text: "result" }) : null),
          el("td", { text: formatBytes(f.size) }),
          el("td", { text: f.mtime ? new Date(f.mtime).toLocaleString() : "" }),
          el("td", {}, button),
        );
      }),
    );
    $("results-empty").hidden = files.length > 0;
    $("results-table").hidden = files.length === 0;
    $("results-zip").hidden = files.length === 0;
  }

  async downloadFile(path, button) {
    const id = this.jobId;
    const enc = path.split("/").map(encodeURIComponent).join("/");
    button.disabled = true;
    try {
      const { blob, disposition } = await this.api.download(`/api/v1/jobs/${encodeURIComponent(id)}/files/${enc}`);
      saveBlob(blob, dispositionName(disposition, path.split("/").pop()));
      $("job-action-status").textContent = `Downloaded ${path}`;
    } catch (exc) {
      this.handleError(exc);
    } finally {
      button.disabled = false;
    }
  }

  async downloadZip() {
    const id = this.jobId;
    const b = $("results-zip");
    b.disabled = true;
    $("job-action-status").textContent = "Preparing the zip…";
    try {
      const { blob, disposition } = await this.api.download(`/api/v1/jobs/${encodeURIComponent(id)}/files.zip`);
      saveBlob(blob, dispositionName(disposition, `job-${id}.zip`));
      $("job-action-status").textContent = "Downloaded the zip";
    } catch (exc) {
      this.handleError(exc);
    } finally {
      b.disabled = false;
    }
  }

  async cancelJob() {
    const b = $("job-cancel");
    if (b.dataset.confirm !== "1") {
      b.dataset.confirm = "1";
      b.textContent = "Confirm cancel";
      this.announce("Press cancel again to confirm");
      setTimeout(() => {
        b.dataset.confirm = "";
        b.textContent = "Cancel job";
      }, 5000);
      return;
    }
    b.dataset.confirm = "";
    b.textContent = "Cancel job";
    try {
      const j = await this.api.cancelJob(this.jobId);
      if (j?.id) this.onJobEvent(j);
      $("job-action-status").textContent = "Cancel requested";
    } catch (exc) {
      this.handleError(exc);
    }
  }

  /** Opens the form of the job's template prefilled with its parameters and resources. */
  async submitAgain() {
    const j = this.jobs.get(this.jobId);
    if (!j?.template) return;
    let req = null;
    try {
      req = await this.api.jobRequest(j.id);
    } catch (exc) {
      this.handleError(exc);
    }
    const source = req ?? j; // without /request: the resources the job record shows, template defaults for parameters
    const ref = source.template ?? j.template;
    const names = Object.entries(source.files ?? j.files ?? {}).map(([s, n]) => `${s}: ${n.join(", ")}`).join("; ");
    const note = `Same ${req ? "parameters and " : ""}resources as job ${j.id.slice(0, 8)}${names ? `; add the input files again (${names})` : ""}${req ? "" : " (parameters: template defaults — the daemon does not expose the job's parameters)"}.`;
    window.history.pushState(null, "", `#/new/${encodeURIComponent(ref)}`);
    await this.openForm(ref, { values: null, note });
    if (this.model) {
      const values = prefillValues(this.model, { ...j, ...(req ?? {}), ...(req?.resources ?? {}) });
      this.renderParams(values);
      this.renderResources(values);
    }
  }
}
