"""Checkpoint conversion commands.

    python -m jav.convert ltx2 SRC --workdir OUT [--dtype float32]
        a diffusers LTX-2 transformer folder -> a jav run directory (EMA = params)
    python -m jav.convert ltx2-export RUN --out DIR [--weights ema|params] [--step N]
        a jav LTX-2 run -> a diffusers transformer folder
    python -m jav.convert merge-lora RUN --workdir OUT [--weights ema|params] [--step N]
        a run trained with LoRA adapters -> a run with the adapters folded into its kernels
"""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m jav.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("ltx2", help="diffusers LTX2VideoTransformer3DModel folder -> jav run directory")
    imp.add_argument("src", help="folder with config.json and *.safetensors (or a sharded index)")
    imp.add_argument("--workdir", required=True, help="the run directory to write")
    imp.add_argument("--dtype", default=None, help="parameter dtype (default: the weights' own)")
    exp = sub.add_parser("ltx2-export", help="jav LTX-2 run directory -> diffusers folder")
    exp.add_argument("run", help="a run directory written by `ltx2` or by training")
    exp.add_argument("--out", required=True)
    exp.add_argument("--weights", default="ema", choices=("ema", "params"))
    exp.add_argument("--step", type=int, default=None)
    merge = sub.add_parser("merge-lora", help="run with LoRA adapters -> run with them merged into the kernels")
    merge.add_argument("run", help="a run directory trained with model.lora.rank > 0")
    merge.add_argument("--workdir", required=True, help="the run directory to write")
    merge.add_argument("--weights", default="ema", choices=("ema", "params"))
    merge.add_argument("--step", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "merge-lora":
        from jav.convert.lora import merge_run

        try:
            cfg, merged = merge_run(args.run, args.workdir, args.weights, args.step)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"python -m jav.convert merge-lora: {e}\n")
        print(f"wrote {args.workdir}: {merged} adapters merged from {args.run} step {cfg.merged_from.step} ({args.weights})")
        return

    from jav.convert import ltx2

    if args.command == "ltx2":
        cfg = ltx2.to_jav(args.src, args.workdir, args.dtype)
        print(f"wrote {args.workdir}: LTX-2 with {cfg.model.depth} blocks ({cfg.model.param_dtype})")
    else:
        print(f"wrote {ltx2.to_diffusers(args.run, args.out, args.weights, args.step)}")


if __name__ == "__main__":
    main()
