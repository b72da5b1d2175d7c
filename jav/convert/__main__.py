"""Checkpoint conversion commands.

    python -m jav.convert ltx2 SRC --workdir OUT [--dtype float32]
        a diffusers LTX-2 transformer folder -> a jav run directory (EMA = params)
    python -m jav.convert ltx2-export RUN --out DIR [--weights ema|params] [--step N]
        a jav LTX-2 run -> a diffusers transformer folder
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
    args = parser.parse_args(argv)

    from jav.convert import ltx2

    if args.command == "ltx2":
        cfg = ltx2.to_jav(args.src, args.workdir, args.dtype)
        print(f"wrote {args.workdir}: LTX-2 with {cfg.model.depth} blocks ({cfg.model.param_dtype})")
    else:
        print(f"wrote {ltx2.to_diffusers(args.run, args.out, args.weights, args.step)}")


if __name__ == "__main__":
    main()
