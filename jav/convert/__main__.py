"""Checkpoint conversion commands.

python -m jav.convert ltx2 SRC --workdir OUT [--dtype float32]
    a diffusers LTX-2 transformer folder -> a jav run directory (EMA = params)
python -m jav.convert ltx2-export RUN --out DIR [--weights ema|params] [--step N]
    a jav LTX-2 run -> a diffusers transformer folder
python -m jav.convert wan SRC --workdir OUT [--dtype float32] [--seed 0]
    a diffusers Wan transformer folder -> the video branch of a jav run directory (configs/wan.py;
    the audio branch initialised from --seed; EMA = params)
python -m jav.convert wan-export RUN --out DIR [--weights ema|params] [--step N]
    a jav run's Wan video branch -> a diffusers transformer folder
python -m jav.convert ltx2-video-vae SRC --workdir OUT [--dtype float32]
python -m jav.convert ltx2-audio-vae SRC --workdir OUT [--dtype float32]
python -m jav.convert ltx2-vocoder SRC --workdir OUT [--dtype float32]
python -m jav.convert ltx2-connectors SRC --workdir OUT [--dtype float32]
python -m jav.convert wan-vae SRC --workdir OUT [--dtype float32]
    a diffusers folder of LTX-2's video VAE (AutoencoderKLLTX2Video), audio VAE
    (AutoencoderKLLTX2Audio), vocoder (LTX2Vocoder or LTX2VocoderWithBWE) or text connectors
    (LTX2TextConnectors), or of Wan's video VAE (AutoencoderKLWan) -> a jav run directory
    (EMA = params; model.kind ltx2_video_vae, ltx2_audio_vae, ltx2_vocoder, ltx2_connectors,
    wan_video_vae) that jav.runs.load_autoencoder loads
python -m jav.convert export RUN --out DIR [--weights ema|params] [--step N]
    a run of those commands, of `ltx2` or of `wan` -> a diffusers folder (config.json and
    diffusion_pytorch_model.safetensors)
python -m jav.convert merge-lora RUN --workdir OUT [--weights ema|params] [--step N]
    a run trained with LoRA adapters -> a run with the adapters folded into its kernels
python -m jav.convert forward --workdir RUN --inputs IN.npz --out OUT.npz [--weights ema|params]
    an LTX-2 run on inputs named as diffusers' LTX2VideoTransformer3DModel.forward arguments
    (scalars as 0-d arrays) -> OUT.npz with `video` and `audio`, to check a conversion in PyTorch
"""

import argparse


def ltx2_forward_names() -> list[str]:
    from jav.convert.ltx2 import FORWARD_ARRAYS, FORWARD_SCALARS

    return list(FORWARD_ARRAYS + FORWARD_SCALARS)


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
    wan = sub.add_parser("wan", help="diffusers WanTransformer3DModel folder -> the video branch of a jav run directory")
    wan.add_argument("src", help="folder with config.json and *.safetensors (or a sharded index)")
    wan.add_argument("--workdir", required=True, help="the run directory to write")
    wan.add_argument("--dtype", default=None, help="parameter dtype (default: the weights' own)")
    wan.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised audio branch")
    wan_exp = sub.add_parser("wan-export", help="jav run's Wan video branch -> diffusers folder")
    wan_exp.add_argument("run", help="a run directory written by `wan` or by training")
    wan_exp.add_argument("--out", required=True)
    wan_exp.add_argument("--weights", default="ema", choices=("ema", "params"))
    wan_exp.add_argument("--step", type=int, default=None)
    from jav.convert.parts import COMMANDS, PARTS

    for kind, part in PARTS.items():
        part_imp = sub.add_parser(part.command, help=f"diffusers {' or '.join(part.classes)} folder -> jav run directory (model.kind {kind})")
        part_imp.add_argument("src", help="folder with config.json and *.safetensors")
        part_imp.add_argument("--workdir", required=True, help="the run directory to write")
        part_imp.add_argument("--dtype", default=None, help="parameter dtype (default: the weights' own)")
    export = sub.add_parser("export", help="jav run directory -> diffusers folder, by what the run holds")
    export.add_argument("run", help=f"a run written by ltx2, wan or {', '.join(COMMANDS)} (or trained from ltx2's or wan's)")
    export.add_argument("--out", required=True)
    export.add_argument("--weights", default="ema", choices=("ema", "params"))
    export.add_argument("--step", type=int, default=None)
    merge = sub.add_parser("merge-lora", help="run with LoRA adapters -> run with them merged into the kernels")
    merge.add_argument("run", help="a run directory trained with model.lora.rank > 0")
    merge.add_argument("--workdir", required=True, help="the run directory to write")
    merge.add_argument("--weights", default="ema", choices=("ema", "params"))
    merge.add_argument("--step", type=int, default=None)
    fwd = sub.add_parser("forward", help="LTX-2 run on diffusers-named inputs (.npz) -> video and audio outputs (.npz)")
    fwd.add_argument("--workdir", required=True, help="a run directory written by `ltx2` or by training")
    fwd.add_argument("--inputs", required=True, help="an .npz of " + ", ".join(ltx2_forward_names()))
    fwd.add_argument("--out", required=True, help="the .npz to write (video, audio)")
    fwd.add_argument("--weights", default="ema", choices=("ema", "params"))
    fwd.add_argument("--step", type=int, default=None)
    args = parser.parse_args(argv)

    if args.command == "forward":
        from jav.convert.ltx2 import forward

        try:
            out = forward(args.workdir, args.inputs, args.out, args.weights, args.step)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"python -m jav.convert forward: {e}\n")
        print(f"wrote {args.out}: video {out['video'].shape}, audio {out['audio'].shape}")
        return

    if args.command in COMMANDS or args.command == "export":
        from jav.convert import parts

        try:
            if args.command == "export":
                print(f"wrote {parts.export(args.run, args.out, args.weights, args.step)}")
            else:
                cfg = parts.to_jav(COMMANDS[args.command], args.src, args.workdir, args.dtype)
                print(f"wrote {args.workdir}: model.kind {cfg.model.kind} ({cfg.model.dtype})")
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"python -m jav.convert {args.command}: {e}\n")
        return

    if args.command == "merge-lora":
        from jav.convert.lora import merge_run

        try:
            cfg, merged = merge_run(args.run, args.workdir, args.weights, args.step)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"python -m jav.convert merge-lora: {e}\n")
        print(f"wrote {args.workdir}: {merged} adapters merged from {args.run} step {cfg.merged_from.step} ({args.weights})")
        return

    if args.command in ("wan", "wan-export"):
        from jav.convert import wan as wan_convert

        try:
            if args.command == "wan":
                cfg = wan_convert.to_jav(args.src, args.workdir, args.dtype, args.seed)
                print(f"wrote {args.workdir}: Wan with {cfg.model.depth} blocks, {cfg.model.video.width} wide ({cfg.model.param_dtype})")
            else:
                print(f"wrote {wan_convert.to_diffusers(args.run, args.out, args.weights, args.step)}")
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"python -m jav.convert {args.command}: {e}\n")
        return

    from jav.convert import ltx2

    try:
        if args.command == "ltx2":
            cfg = ltx2.to_jav(args.src, args.workdir, args.dtype)
            print(f"wrote {args.workdir}: LTX-2 with {cfg.model.depth} blocks ({cfg.model.param_dtype})")
        else:
            print(f"wrote {ltx2.to_diffusers(args.run, args.out, args.weights, args.step)}")
    except (FileNotFoundError, ValueError) as e:  # a bad folder or an option jav does not express: one line naming it
        parser.exit(2, f"python -m jav.convert {args.command}: {e}\n")


if __name__ == "__main__":
    main()
