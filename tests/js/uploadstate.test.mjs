// Unit tests of the upload state machine. Run: node --test tests/js/
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  classifyUploadError,
  formatSpeed,
  isUploadBusy,
  newUpload,
  uploadActions,
  uploadEta,
  uploadFraction,
  uploadMetadata,
  uploadReducer,
  uploadSpeed,
} from "../../daemon/vizdesk/static/uploadstate.js";

const MB = 1e6;
const run = (u, ...events) => events.reduce(uploadReducer, u);

describe("upload state machine", () => {
  const fresh = () => newUpload({ key: "k", slot: "mesh", name: "wing.msh", size: 100 * MB, now: 0 });

  it("a refused file never starts", () => {
    const u = newUpload({ key: "k", slot: "mesh", name: "x.txt", size: 1, check: { code: "wrong_pattern", message: "no" } });
    assert.equal(u.state, "refused");
    assert.equal(u.errorCode, "wrong_pattern");
    assert.equal(uploadReducer(u, { type: "start" }).state, "refused");
    assert.equal(isUploadBusy(u.state), false);
  });

  it("queued → uploading → done with progress, speed and time left", () => {
    let u = run(fresh(), { type: "start", now: 0 }, { type: "url", url: "/api/v1/uploads/abc", now: 10 }, { type: "patch", offset: 0, now: 10 });
    assert.equal(u.state, "uploading");
    assert.equal(u.uploadId, "abc");
    assert.equal(u.startOffset, 0);
    assert.equal(u.resumedFrom, null);
    u = run(u, { type: "progress", bytes: 10 * MB, now: 1000 }, { type: "progress", bytes: 30 * MB, now: 2000 });
    assert.equal(uploadSpeed(u), 20 * MB);
    assert.equal(uploadEta(u), 3.5);
    assert.equal(uploadFraction(u), 0.3);
    assert.equal(formatSpeed(uploadSpeed(u)), "20.0 MB/s");
    u = uploadReducer(u, { type: "success", now: 5000 });
    assert.equal(u.state, "done");
    assert.equal(u.offset, 100 * MB);
    assert.deepEqual(uploadActions(u.state), { pause: false, resume: false, cancel: false, remove: true });
  });

  it("the speed window forgets samples older than 5 s", () => {
    let u = run(fresh(), { type: "start", now: 0 });
    u = run(u, { type: "progress", bytes: 0, now: 0 }, { type: "progress", bytes: 50 * MB, now: 1000 }, { type: "progress", bytes: 51 * MB, now: 7000 }, { type: "progress", bytes: 52 * MB, now: 8000 });
    assert.equal(uploadSpeed(u), 1 * MB); // only the samples at 7 s and 8 s are left
  });

  it("pause keeps the offset; resume starts again from it", () => {
    let u = run(fresh(), { type: "start", now: 0 }, { type: "patch", offset: 0 }, { type: "progress", bytes: 40 * MB, now: 1000 }, { type: "pause", now: 1100 });
    assert.equal(u.state, "paused");
    assert.equal(u.offset, 40 * MB);
    assert.deepEqual(uploadActions("paused"), { pause: false, resume: true, cancel: true, remove: false });
    assert.equal(uploadReducer(u, { type: "progress", bytes: 41 * MB }).offset, 40 * MB, "no progress while paused");
    u = run(u, { type: "resume" }, { type: "start" }, { type: "patch", offset: 40 * MB });
    assert.equal(u.state, "uploading");
    assert.equal(u.startOffset, 40 * MB);
    assert.equal(u.resumedFrom, 40 * MB);
    assert.equal(u.attempts, 2);
  });

  it("after a reload the first PATCH from a non-zero offset is recorded as resumed", () => {
    const u = run(fresh(), { type: "start" }, { type: "url", url: "/api/v1/uploads/abc", resumed: true }, { type: "patch", offset: 55 * MB }, { type: "patch", offset: 63 * MB });
    assert.equal(u.resumedFrom, 55 * MB);
    assert.equal(u.resumedUpload, true);
    assert.equal(u.startOffset, 55 * MB);
    assert.equal(u.patches, 2);
  });

  it("a dropped connection retries, then continues", () => {
    let u = run(fresh(), { type: "start" }, { type: "progress", bytes: 10 * MB, now: 100 }, { type: "retry", message: "offline" });
    assert.equal(u.state, "retrying");
    assert.equal(isUploadBusy(u.state), true);
    u = uploadReducer(u, { type: "progress", bytes: 11 * MB, now: 200 });
    assert.equal(u.state, "uploading");
  });

  it("an expired token waits for a new one and goes on from the offset", () => {
    let u = run(fresh(), { type: "start" }, { type: "progress", bytes: 10 * MB }, { type: "auth" });
    assert.equal(u.state, "auth");
    assert.equal(uploadReducer(u, { type: "success" }).state, "done");
    u = run(u, { type: "token" }, { type: "start" });
    assert.equal(u.state, "uploading");
    assert.equal(u.offset, 10 * MB);
  });

  it("errors, cancel and the final states", () => {
    const failed = run(fresh(), { type: "start" }, { type: "error", message: "413 too big", code: "too_big" });
    assert.equal(failed.state, "failed");
    assert.deepEqual(uploadActions("failed"), { pause: false, resume: true, cancel: true, remove: true });
    assert.equal(uploadReducer(failed, { type: "resume" }).state, "queued");
    assert.equal(uploadReducer(failed, { type: "cancel" }).state, "cancelled");
    const done = run(fresh(), { type: "start" }, { type: "success" });
    assert.equal(uploadReducer(done, { type: "cancel" }).state, "done", "a finished upload is not cancelled");
    assert.equal(uploadReducer(done, { type: "error" }).state, "done");
    const invalid = uploadReducer(done, { type: "invalid", code: "schema", message: "bad" });
    assert.equal(invalid.state, "done");
    assert.equal(invalid.errorCode, "schema");
    assert.equal(uploadReducer(fresh(), { type: "bogus" }).state, "queued");
  });

  it("classifies tus errors by HTTP status", () => {
    assert.equal(classifyUploadError(401), "auth");
    for (const s of [0, undefined, 409, 423, 429, 500, 503]) assert.equal(classifyUploadError(s), "retry", String(s));
    for (const s of [400, 403, 404, 410, 413]) assert.equal(classifyUploadError(s), "fatal", String(s));
  });

  it("metadata carries filename, slot and template", () => {
    assert.deepEqual(uploadMetadata("a.msh", "mesh", "~alice/big"), { filename: "a.msh", slot: "mesh", template: "~alice/big" });
    assert.deepEqual(uploadMetadata("a.msh", null, null), { filename: "a.msh" });
  });
});
