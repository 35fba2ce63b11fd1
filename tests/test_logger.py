"""logger/logger.py: the run's log file."""


def test_a_log_file_that_cannot_be_written_is_one_warning_not_a_traceback_per_record(tmp_path, capsys):
    import logging

    from logger.logger import RunLogHandler

    handler = RunLogHandler(tmp_path / "info.log")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    handler.stream.write = full
    logger = logging.getLogger("full-disk-test")
    logger.addHandler(handler)
    try:
        for i in range(4):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert err.count("cannot write the log (No space left on device)") == 1 and "Traceback" not in err
