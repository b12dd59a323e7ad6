"""The fake's ``hailo_platform.pyhailort`` package (see :mod:`.pyhailort`)."""
