"""The testbed: a small GPT-2 trained from scratch, on CPU, on the fact corpus.

It stands in for GPT2-XL / GPT-J / Llama3 where no hub is reachable. After training it is
written with `save_pretrained` (model and tokenizer in one directory) and read back through
`seqedit.models.load.load_model`, the same path a hub model takes.

Training is plain next-token prediction. An example is one corpus line starting at position
0 (as evaluation prompts do) or, with probability `concat_prob`, two lines joined, so facts
are also learned after an unrelated prefix (CounterFact's paraphrase prompts carry one).
Every example ends with EOS; padding is masked out of the loss.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from seqedit.core.prompts import pad_batch
from seqedit.models.tokenizer import train_tokenizer


@dataclass
class TestbedConfig:
    seed: int = 0
    vocab_size: int = 2048
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 64
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    concat_prob: float = 0.3  # share of examples that are two corpus lines joined (facts after a prefix)
    threads: int = 1  # torch threads; the trained weights depend on it (sums run in another order)

    def __post_init__(self):
        for name in ("vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"testbed.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"testbed.n_embd ({self.n_embd}) must be divisible by testbed.n_head ({self.n_head})")
        if not 0.0 <= self.concat_prob <= 1.0:
            raise ValueError(f"testbed.concat_prob must be within [0, 1], got {self.concat_prob}")
        if not self.lr > 0:
            raise ValueError(f"testbed.lr must be > 0, got {self.lr}")


def lr_at(step: int, cfg: TestbedConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(1.0, frac)))


def train_testbed(lines: list[str], cfg: TestbedConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train tokenizer and model on `lines`; save both to `out_dir`; return a summary."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    lines = [l.strip() for l in lines if l.strip()]
    if not lines:
        raise ValueError("the testbed corpus is empty")
    tok = train_tokenizer(lines, vocab_size=cfg.vocab_size)
    eos = tok.eos_token_id
    examples = [tok(l)["input_ids"][: cfg.n_positions - 1] + [eos] for l in lines]

    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tok), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=4 * cfg.n_embd, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )
    )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    order: list[int] = []
    losses = []
    bar = tqdm(range(cfg.steps), desc="train testbed", disable=not progress, mininterval=2.0)
    for step in bar:
        if len(order) < cfg.batch_size:  # epoch-style sampling without replacement
            more = list(range(len(examples)))
            rng.shuffle(more)
            order.extend(more)
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        rows = []
        for i in idx:
            row = examples[i]
            if rng.random() < cfg.concat_prob:
                row = (row[:-1] + examples[rng.randrange(len(examples))])[: cfg.n_positions]
            rows.append(row)
        ids, mask = pad_batch(rows, eos)
        labels = ids.masked_fill(mask == 0, -100)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    model.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    seconds = time.time() - t0
    summary = {
        "config": asdict(cfg),
        "n_lines": len(lines),
        "n_params": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-100:]) / len(losses[-100:]),
        "train_seconds": round(seconds, 1),
    }
    print(f"testbed trained: {summary['n_params']} parameters, final loss {summary['final_loss']:.4f}, "
          f"{seconds:.1f} s")
    return summary
