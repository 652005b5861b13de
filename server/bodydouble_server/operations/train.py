"""Train: a character adapter trained and published into the server's adapters folder.

A server runs this in its own process beside its worker (scale/offload.py), so fills keep running meanwhile;
a farm task runs it directly. Progress streams every step and cancel stops it between steps, keeping a
checkpoint that the same request resumes from. Training builds its own denoiser (the image model's UNet, or the video
model's transformer for ``model_kind: video``): the resident pipeline's adapters are not touched, only
its VAE and text encoder are borrowed, with the served adapters switched off.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from bodydouble import errors, protocol
from bodydouble.jobspec import TrainRequest

from ..adapters import MANIFEST_FILE
from ..engine import Engine
from ..training import checkpoints, contact, run
from ..training.report import summary_text
from ..training.loop import TrainingCancelled

log = logging.getLogger("bodydouble.train")


def reading_frames(job, what: str, interval: float = 0.5):
    """``on_frame`` for the data report: progress at most every ``interval`` s (a set can be thousands of
    frames) and cancel between frames."""
    last = [0.0]

    def on_frame(index: int, total: int, path: Path) -> None:
        if job.cancel_event.is_set():
            raise errors.JobCancelled(f"{what} cancelled while reading frame {index + 1} of {total}; nothing was "
                                      "trained or written", details={"frames_read": index, "frames": total})
        now = time.monotonic()
        if now - last[0] >= interval or index + 1 == total:
            last[0] = now
            job.report(0.0, f"reading frame {index + 1} of {total}: {path.name}", phase="report",
                       frames_read=index, frames=total)
    return on_frame


def validate(req: TrainRequest, engine: Engine) -> None:
    """Submit-time checks, before ``accepted`` (cheap: no frame read, nothing written; see operations/common)."""
    for path in req.frames:
        engine.roots.check(path, "training frames")
    if req.contact_sheet:
        engine.roots.writable_dir(Path(req.contact_sheet).parent, "contact_sheet")
    if not req.report_only:              # a data report needs no model and no rights yet
        missing = [what for what, value in (("rights holder (rights_holder)", req.rights_holder),
                                            ("licence/consent note (licence)", req.licence)) if not value.strip()]
        if missing:
            raise errors.RequestError(f"an adapter must say its {' and '.join(missing)}: set them before training",
                                      code=errors.INVALID_REQUEST)
        engine.check_model(req.model_kind)   # not_supported / model_unavailable (skipped while loading)


def resume_point(req: TrainRequest, engine: Engine) -> dict:
    """Where a train job taken up again after a server stop continues: its last checkpoint (the run itself resumes
    from the work folder, as when the same request is submitted again)."""
    settings, _ = run.from_request(req)
    found = checkpoints.latest(run.work_dir_for(Path(engine.config.adapters), settings.name), at_most=settings.steps)
    return {"checkpoint_step": found.step if found else None}


def run_train(engine: Engine, job, req: TrainRequest) -> protocol.Message:
    settings, thresholds = run.from_request(req)
    job.report(0.0, "reading frames for the data report", phase="report")
    if req.report_only:
        return _report_only(engine, job, req, settings.resolution, thresholds)
    model = engine.model(settings.model_kind)     # not_supported / model_unavailable when the server has none
    pipe, identity, library = model.pipeline(), model.identity, model.adapters
    library.activate(pipe, [])   # the text encoder lent to training must be the plain base model's

    def on_progress(p: dict) -> None:
        job.report(p["step"] / p["steps"], run.progress_line(p), phase="train", **p)

    try:
        folder, report = run.train_adapter(
            pipe, identity, req.frames, settings, Path(engine.config.adapters), thresholds=thresholds,
            force=req.force, roots=engine.roots, colourspace=req.colorspace, device=engine.device,
            on_progress=on_progress, should_stop=job.cancel_event.is_set,
            on_frame=reading_frames(job, f"training of {settings.name}"))
    except TrainingCancelled as exc:
        raise errors.JobCancelled(
            f"training of {settings.name} cancelled at step {exc.step}; checkpoint kept in {exc.checkpoint}. "
            "Submit the same request again to resume.",
            details={"step": exc.step, "checkpoint": str(exc.checkpoint) if exc.checkpoint else None}) from None
    job.report(1.0, f"publishing {folder.name}", phase="publish")
    return _published(engine, job, folder, settings.model_kind, summary_text(report))


def answering_from_published(runner):
    """``runner`` (the server's train runner) for jobs a restarted server took up again: one whose adapter was
    published before the crash is answered from it (:func:`published_before_restart`), not run again."""
    def run_job(engine: Engine, job, req: TrainRequest) -> protocol.Message:
        if getattr(job, "resumed", None) is not None and not req.report_only:
            finished = published_before_restart(engine, job, req)
            if finished is not None:
                return finished
        return runner(engine, job, req)
    return run_job


def published_before_restart(engine: Engine, job, req: TrainRequest) -> protocol.Message | None:
    """A job taken up again after a crash whose adapter was already published (the server died between
    publishing and replying): its result, read from the adapter on disk, instead of 'already exists'. The
    adapter must be this request's: the same training settings, every step done."""
    import dataclasses

    settings, _ = run.from_request(req)
    folder = Path(engine.config.adapters) / settings.name
    try:
        training = json.loads((folder / MANIFEST_FILE).read_text())["training"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (training.get("settings") != json.loads(json.dumps(dataclasses.asdict(settings)))
            or training.get("steps_done") != settings.steps):
        return None
    log.info("job %s: %s was published before the restart; answering from it", job.id, folder.name)
    gaps = training.get("report", {}).get("gaps", [])
    return _published(engine, job, folder, settings.model_kind,
                      f"published before the server restarted ({len(gaps)} coverage gaps)", published_before_restart=True)


def _published(engine: Engine, job, folder: Path, model_kind: str, summary: str, **extra) -> protocol.Message:
    """The result of a train job whose adapter is in ``folder``: what its manifest says, and its status here (the
    server rescans, so it is listed and resident at once, like any adapter dropped into the folder)."""
    engine.rescan()
    model = engine.model(model_kind)
    adapter = model.adapters.adapters.get(folder.name)
    training = json.loads((folder / MANIFEST_FILE).read_text())["training"]
    return _result(job, {
        "adapter": folder.name, "adapter_dir": str(folder),
        "adapter_status": adapter.status if adapter else "missing", "adapter_reason": adapter.reason if adapter else "",
        "steps_done": training["steps_done"], "metrics": training["metrics"], "report": training["report"],
        "summary": summary, "ok_to_train": True,
        "previews": sorted(str(p.relative_to(folder)) for p in (folder / "previews").glob("*.png")),
        "model_kind": model_kind, "test_model": model.identity.test_model,
        "clips": {k: v for k, v in training["clips"].items() if k != "list"} if "clips" in training else None,
        **extra,
    })


def _report_only(engine: Engine, job, req: TrainRequest, resolution: int, thresholds) -> protocol.Message:
    sheet = engine.roots.check(req.contact_sheet, "contact_sheet") if req.contact_sheet else None
    data, report = run.data_report(req.frames, resolution, thresholds, engine.roots, req.colorspace,
                                   reading_frames(job, "the data report"))
    if sheet is not None and data.frames:
        contact.contact_sheet(data, sheet)
    return _result(job, {"report_only": True, "report": report, "summary": summary_text(report),
                         "ok_to_train": report["ok_to_train"], "contact_sheet": str(sheet) if sheet else None})


def _result(job, body: dict) -> protocol.Message:
    return protocol.Message(type="result", id=job.request_id, body={"job": job.id, "operation": "train", **body})
