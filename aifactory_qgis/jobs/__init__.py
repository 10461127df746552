"""Jobs: what to run (:mod:`.spec`), how to run it (:mod:`.runners`: QProcess or Ray Jobs REST) and the
manager that keeps the history and loads the outputs."""
