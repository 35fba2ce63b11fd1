"""The one owner of a run's files, in the manner of timm's CheckpointSaver: the run folder
`<save_dir>/<name>/<run_id>/` and its lock (checkpoint/run_folder.py), the effective config.json and
provenance.json in it, and the checkpoints by one save policy, each written atomically with Ctrl-C
held back. What a checkpoint holds is checkpoint/schema.py; what a resume checks is checkpoint/resume.py."""

import logging
import shlex
import shutil
from datetime import datetime
from pathlib import Path

from checkpoint.provenance import record_provenance
from checkpoint.run_folder import make_run_dir, release
from utils.errors import CheckpointError
from utils.paths import interrupts_deferred, save_atomic


class RunFiles:
    """Where a run writes, and the save policy: last.pth every epoch (what a killed run resumes
    from), checkpoint-epochN.pth every `save_period` epochs and at the end, model_best.pth when the
    monitored metric improves. The folder is made by `open`, not before: a run that fails its checks
    writes nothing."""

    def __init__(self, run_dir, resume=None, save_period=10):
        self.run_dir, self.resume, self.save_period = Path(run_dir), resume, save_period
        self.logger = logging.getLogger("trainer")
        self._lock, self._made, self._new_parents = None, False, []
        self.command = "python train.py"  # what resumes it (utils.distributed.run_group: torchrun and its flags)

    @classmethod
    def of(cls, config, run_id=None):
        """The run's files as `config` (a config.parser.ConfigParser) says: a resumed run continues
        in its own folder; a new one gets `<save_dir>/<name>/<run_id or a timestamp>`."""
        resume = config.resume
        if resume is not None and (resume.parent / "config.json").is_file():
            run_dir = resume.parent
        else:
            run_dir = (
                Path(config["trainer"]["save_dir"]).expanduser()
                / config["name"]
                / (run_id or datetime.now().strftime("%m%d_%H%M%S"))
            )
        return cls(run_dir, resume, config["trainer"]["save_period"])

    @property
    def last(self):
        return self.run_dir / "last.pth"

    def resume_hint(self):
        """How to go on after a stop: the command that resumes from last.pth, when there is one."""
        if not self.last.is_file():
            return "no epoch had finished, so there is nothing to resume: start the run again"
        return f"the last finished epoch is saved; resume with  {self.command} --resume {shlex.quote(str(self.last))}"

    def open(self, config, device):
        """Make (or, on resume, lock) the folder and write config.json and this start's provenance."""
        self._made = self.resume is None or self.run_dir != self.resume.parent
        self._new_parents = [p for p in self.run_dir.parents if not p.exists()]  # save_dir/name, if new
        self.run_dir, self._lock = make_run_dir(self.run_dir, self.resume, config)
        record_provenance(self.run_dir, device)
        return self.run_dir

    def close(self, failed=False):
        """Release the folder's lock. The files stay, except after a failure (or a stop) before the
        first checkpoint of a new run: its folder holds nothing to resume, and is removed, so that
        a failed command leaves what existed as it was."""
        release(self._lock)
        self._lock = None
        if failed and self._made and not self.last.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            for parent in self._new_parents:  # innermost first; a folder another run wrote into stays
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
            self.logger.warning(f"{self.run_dir}: removed (no epoch of this new run had been saved)")

    def is_periodic(self, epoch, last_epoch):
        return epoch % self.save_period == 0 or epoch == last_epoch

    def save(self, state, epoch, best=False, periodic=False):
        """last.pth, then checkpoint-epochN.pth (periodic) and model_best.pth (best), all of `state`.
        A Ctrl-C during the saves takes effect once they are done, so the files always belong to the
        same epoch."""
        with interrupts_deferred():
            self._write(state, self.last)
            if periodic:
                path = self.run_dir / f"checkpoint-epoch{epoch}.pth"
                self._write(state, path)
                self.logger.debug(f"Saving checkpoint: {path} ...")
            if best:
                self._write(state, self.run_dir / "model_best.pth")
                self.logger.debug("Saving current best: model_best.pth ...")

    @staticmethod
    def _write(state, path):
        existed = path.exists()
        try:
            save_atomic(state, path)
        except OSError as e:  # full disk, read-only or vanished folder: the previous file is untouched
            kept = "the previous one is left as it was" if existed else "no file was written"
            raise CheckpointError(f"{path}: cannot save the checkpoint ({e.strerror or e}); {kept}") from None
