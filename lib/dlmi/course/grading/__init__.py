"""The instructor's grading workflow: collect, autograde (sandboxed, in parallel), feedback, export.

Built on nbgrader's own converters and gradebook; what we add is what nbgrader alone lacks for
real classes: a sandbox per submission (:mod:`.sandbox`, :mod:`.isolation`), limits and named
outcomes (:mod:`.outcome`), a guard that makes test cells count only when they really ran
(:mod:`.guard`, :mod:`.preprocessors`), a self-contained per-submission job (:mod:`.job`) run in
parallel (:mod:`.autograde`), and safe intake of LMS exports (:mod:`.collect`).

Nothing is imported here: ``dlmi-course`` loads only what a command needs.
"""
