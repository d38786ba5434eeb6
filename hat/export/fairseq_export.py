"""fairseq export: a checkpoint fairseq loads + the `--user-dir` plugin + dictionaries.

Writes, under DIR:
    checkpoint.pt           {"model", "cfg": {"model", "task", ...}, "optimizer_history", "extra_state"}
                            plain dicts/lists/scalars only: loads with torch's weights-only loader
    hat_fairseq_plugin/     copy of hat/export/fairseq_plugin (registers `hat_subtransformer`)
                            with hat/nn/blocks.py next to it: the layers `hat.model` is made of
    dict.SRC.txt dict.TGT.txt spm.model
    README.txt              the fairseq-generate command line

The model state dict keeps hat's parameter names (the plugin uses the same module tree), so
the conversion is a copy. Writing the file needs neither fairseq nor the plugin.

fairseq-generate's length limit uses the padded batch length, hat's each sentence's own: the
hypotheses are identical at --batch-size 1 or --max-len-a 0; at larger batches only sentences
whose search reaches hat's (lower) limit can differ.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from hat.files import atomic_write_bytes, atomic_write_text, load_torch, save_torch
from hat.nn import blocks


PLUGIN_NAME = "hat_fairseq_plugin"
PLUGIN_SRC = Path(__file__).resolve().parent / "fairseq_plugin"
ARCH = "hat_subtransformer"


def model_cfg(translator) -> dict:
    """`cfg.model` for the plugin: scalars plus per-layer lists (HAT's `*_all` names)."""
    m = translator.model
    c, a = m.config, m.args
    return {
        "_name": ARCH,
        "arch": ARCH,
        "encoder_embed_dim": c.encoder_embed_dim,
        "decoder_embed_dim": c.decoder_embed_dim,
        "encoder_layers": c.encoder_layer_num,
        "decoder_layers": c.decoder_layer_num,
        "encoder_ffn_embed_dim_all": list(c.encoder_ffn_embed_dim),
        "encoder_self_attention_heads_all": list(c.encoder_self_attention_heads),
        "decoder_ffn_embed_dim_all": list(c.decoder_ffn_embed_dim),
        "decoder_self_attention_heads_all": list(c.decoder_self_attention_heads),
        "decoder_ende_attention_heads_all": list(c.decoder_ende_attention_heads),
        "decoder_arbitrary_ende_attn_all": list(c.decoder_arbitrary_ende_attn),
        "qkv_dim": m.qkv_dim,
        "encoder_pos_dim": m.pos_dims[0],
        "decoder_pos_dim": m.pos_dims[1],
        "share_all_embeddings": a.share_all_embeddings,
        "share_decoder_input_output_embed": a.share_decoder_input_output_embed,
        "normalize_before": a.normalize_before,
        "dropout": float(m.encoder.dropout),
        "attention_dropout": float(a.attention_dropout),
        "activation_dropout": float(a.activation_dropout),
        "max_source_positions": a.max_positions,
        "max_target_positions": a.max_positions,
    }


def checkpoint_state(translator, data: str = ".") -> dict:
    m = translator.model
    return {
        "model": {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()},
        "cfg": {
            "_name": None,
            "model": model_cfg(translator),
            "task": {
                "_name": "translation",
                "data": data,
                "source_lang": translator.src_lang,
                "target_lang": translator.tgt_lang,
                "left_pad_source": True,
                "left_pad_target": False,
                "max_source_positions": m.args.max_positions,
                "max_target_positions": m.args.max_positions,
                "load_alignments": False,
                "truncate_source": False,
                "upsample_primary": -1,
                "num_batch_buckets": 0,
                "train_subset": "train",
                "dataset_impl": None,
                "required_seq_len_multiple": 1,
                "eval_bleu": False,
            },
        },
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {}, "num_updates": int(translator.meta.get("update") or 0)}],
        "extra_state": {},
        "hat": {"config": m.config.to_dict(), "meta": translator.meta},
    }


def export_fairseq(translator, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "checkpoint.pt"
    save_torch(checkpoint_state(translator), ckpt)
    plugin = out_dir / PLUGIN_NAME
    if plugin.exists():
        shutil.rmtree(plugin)
    shutil.copytree(PLUGIN_SRC, plugin, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(blocks.__file__, plugin / "blocks.py")
    src, tgt = translator.src_lang, translator.tgt_lang
    translator.src_dict.save(out_dir / f"dict.{src}.txt")
    translator.tgt_dict.save(out_dir / f"dict.{tgt}.txt")
    atomic_write_bytes(out_dir / "spm.model", translator.spm_bytes)
    usage = (
        f"fairseq-preprocess --source-lang {src} --target-lang {tgt} --testpref TEST_SPM_PIECES "
        f"--srcdict {out_dir}/dict.{src}.txt --tgtdict {out_dir}/dict.{tgt}.txt --destdir DATA_BIN --workers 1\n"
        f"fairseq-generate DATA_BIN --path {ckpt} --user-dir {plugin} --source-lang {src} --target-lang {tgt} "
        f"--beam 4 --lenpen 0.6 --max-len-a 1.2 --max-len-b 10 --batch-size 1 --required-batch-size-multiple 1 "
        f"--post-process sentencepiece"
    )
    atomic_write_text(
        out_dir / "README.txt",
        "HAT SubTransformer exported for fairseq (plugin architecture hat_subtransformer).\n"
        "Source text must be SentencePiece-encoded with spm.model (pieces separated by spaces).\n"
        "fairseq limits the output length to max_len_a * (padded batch length) + max_len_b, `hat evaluate`\n"
        "to max_len_a * (the sentence's own length) + max_len_b. At --batch-size 1, or with --max-len-a 0,\n"
        "the hypotheses match `hat evaluate` exactly; at larger batches only sentences whose search\n"
        "reaches hat's (lower) limit can differ.\n\n" + usage + "\n",
    )
    files = [str(ckpt), str(plugin), str(out_dir / f"dict.{src}.txt"), str(out_dir / f"dict.{tgt}.txt"),
             str(out_dir / "spm.model"), str(out_dir / "README.txt")]
    return {"format": "fairseq", "files": files, "checkpoint": str(ckpt), "user_dir": str(plugin), "usage": usage}


def load_fairseq_model(export_dir: str | Path):
    """Load the exported checkpoint with fairseq (needs fairseq); returns (model, cfg, task).

    The file is first read weights-only here (fairseq's own `torch.load` call names no
    `weights_only`), so a tampered checkpoint is refused before fairseq opens it."""
    from argparse import Namespace

    export_dir = Path(export_dir)
    load_torch(export_dir / "checkpoint.pt", "fairseq checkpoint")
    from fairseq import checkpoint_utils, utils
    utils.import_user_module(Namespace(user_dir=str(export_dir / PLUGIN_NAME)))
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(export_dir / "checkpoint.pt")], arg_overrides={"data": str(export_dir)}
    )
    return models[0].eval(), cfg, task
