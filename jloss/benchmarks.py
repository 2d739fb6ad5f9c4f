"""The jloss benchmark suite under its first name: ``python -m jloss.benchmarks`` and
``from jloss import benchmarks`` keep working. The suite itself is the package :mod:`jloss.bench`."""

import sys

from jloss.bench import (  # noqa: F401
    SCHEMA,
    WORKLOADS,
    Case,
    Config,
    Target,
    Variant,
    Workload,
    __all__,
    classification_problem,
    environment,
    fused_scan,
    huber_objective,
    huber_problem,
    linear_params,
    main,
    markdown,
    matvec_floor,
    plot,
    python_loop,
    run_case,
    run_suite,
    workload,
)

if __name__ == "__main__":
    sys.exit(main())
