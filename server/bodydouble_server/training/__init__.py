"""Training a character adapter: frames in (``dataset``), a data report (``report``), LoRA out (``trainer``)."""
