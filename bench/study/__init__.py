"""Studies as data: a study is a YAML file (`studies/<name>.yaml`) that declares its parts, its
learning-rate search, its grids, its arms and its claims with their margins; this package runs it
and renders its report. Nothing here names a method, a task or a paper: those are the YAML's.

    python -m bench.study run studies/<name>.yaml      # search, main grids, then the report
    python -m bench.study report studies/<name>.yaml   # re-render the report from finished runs
    python -m bench.study plan studies/<name>.yaml     # print the bench.run commands, run nothing

Modules: spec (load and validate the YAML), plan (the bench.run commands, and running them),
select (which runs belong to a job, an arm, a search; the chosen rates), judge (claims to
verdicts: bench.compare, bench.paired, bench.verdicts, the preconditions), render (the Markdown).
"""
