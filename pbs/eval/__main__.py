"""``python -m pbs.eval ...``: lm-eval's CLI with the ``pbs`` model registered and our tasks on the include path.

    python -m pbs.eval run --model pbs \\
        --model_args pretrained=/models/Llama-3.1-8B-Instruct,method=pbs,threshold=0.9,max_length=127500,dtype=bfloat16,apply_chat_template=true \\
        --tasks pbs_longbench,pbs_longbench_v2 --metadata '{"data_dir": "/data/longbench", "v2_path": "/data/v2.json"}' \\
        --output_path results/ --log_samples
    python -m pbs.eval ls tasks            # includes the pbs_longbench* tasks

Use the model arg ``apply_chat_template=true`` (LongBench's rule, after truncation), not lm-eval's global
``--apply_chat_template``.
"""

import sys


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    import pbs.eval.lm_eval_model  # noqa: F401  (registers the "pbs" model)

    from . import TASKS_DIR

    argv = sys.argv[1:]
    if "--include_path" in argv:
        i = argv.index("--include_path")
        argv[i + 1] = f"{argv[i + 1]}:{TASKS_DIR}" if i + 1 < len(argv) else str(TASKS_DIR)
    elif not argv or argv[0] not in ("-h", "--help"):
        argv += ["--include_path", str(TASKS_DIR)]
    sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
