"""When the run's scheduler steps (per batch, per epoch or on the monitored metric), as its row of
config.schedules.SCHEDULES says."""

from config.schedules import schedule_of


class SchedulerStepper:
    """Steps a scheduler when its SCHEDULES row says: per batch, per epoch or on the monitored metric."""

    def __init__(self, scheduler, monitor):
        self.scheduler = scheduler
        self.metric = monitor.metric
        steps = schedule_of(type(scheduler).__name__).steps if scheduler is not None else None
        self.batch_scheduler = scheduler if steps == "batch" else None
        self.on_metric = steps == "metric"

    def after_epoch(self, log):
        if self.scheduler is None or self.batch_scheduler is not None:
            return
        if self.on_metric:
            self.scheduler.step(log[self.metric])
        else:
            self.scheduler.step()
