#!/usr/bin/env python3
"""Training speed of a Mamba-1 language model in plain PyTorch on the CPU: the anchor that
`ssm train` is compared with (docs/benchmarks.md).

The model follows Hugging Face transformers' pure-PyTorch path (MambaMixer.torch_forward, used when
the CUDA kernels are absent): in_proj -> causal depthwise conv1d + SiLU -> x_proj -> dt_proj +
softplus -> discretised A and B materialised as (batch, d_inner, length, d_state) tensors -> a
sequential scan over time -> + D*x -> * SiLU(z) -> out_proj; pre-norm residual blocks with RMSNorm,
a final RMSNorm and an LM head tied to the embedding. One change: the scan reads its per-step
inputs with unbind() instead of indexing [:, :, i, :] each step, which computes the same values but
keeps backward linear in the length (indexing makes every step's gradient a full-size tensor).

Random initialisation, random tokens, fp32, AdamW (beta2 0.95, weight decay 0.1 on matrices),
gradient clipping at 1.0 - the same work per step as `ssm train`. Each sequence has length + 1
tokens (the last one is only a target), as in `ssm train --seq-len`.

  python3 bench/pytorch/mamba_train_ref.py --d-model 256 --n-layer 4 --vocab 256 -b 8 -l 256
  python3 bench/pytorch/mamba_train_ref.py --d-model 768 --n-layer 24 --vocab 50280 -b 1 -l 256

Prints one JSON line: median tokens/s over the timed steps (after warm-up) and the peak RSS.
With --export DIR it writes the model (mamba_ssm format), a batch and its loss instead, so that
`ssm loss` can confirm both programs compute the same function.
"""
import argparse
import json
import os
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class MambaMixer(nn.Module):
    def __init__(self, d_model, d_state, expand, d_conv=4):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).expand(self.d_inner, -1).contiguous()
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        # mamba_ssm's dt initialisation: dt log-uniform in [1e-3, 1e-1], bias = softplus^-1(dt)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def forward(self, x):  # x: [B, L, d_model]
        B_, L, _ = x.shape
        projected = self.in_proj(x).transpose(1, 2)  # [B, 2*D, L]
        hidden, gate = projected.chunk(2, dim=1)
        hidden = F.silu(self.conv1d(hidden)[..., :L])  # [B, D, L]
        ssm_params = self.x_proj(hidden.transpose(1, 2))  # [B, L, R + 2N]
        time_step, Bm, Cm = torch.split(ssm_params, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(time_step)).transpose(1, 2)  # [B, D, L]
        A = -torch.exp(self.A_log.float())  # [D, N]
        dA = torch.exp(A[None, :, None, :] * dt[:, :, :, None])  # [B, D, L, N]
        dBu = (dt[:, :, :, None] * Bm[:, None, :, :]) * hidden[:, :, :, None]  # [B, D, L, N]
        state = torch.zeros(B_, self.d_inner, self.d_state, dtype=x.dtype)
        outs = []
        for a_t, bu_t, c_t in zip(dA.unbind(2), dBu.unbind(2), Cm.unbind(1)):
            state = a_t * state + bu_t
            outs.append(torch.matmul(state, c_t.unsqueeze(-1))[:, :, 0])
        y = torch.stack(outs, dim=-1)  # [B, D, L]
        y = y + hidden * self.D[None, :, None]
        y = y * F.silu(gate)
        return self.out_proj(y.transpose(1, 2))


class Block(nn.Module):
    def __init__(self, d_model, d_state, expand):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = MambaMixer(d_model, d_state, expand)

    def forward(self, h):
        return h + self.mixer(self.norm(h))


class Backbone(nn.Module):
    def __init__(self, vocab, d_model, n_layer, d_state, expand):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList([Block(d_model, d_state, expand) for _ in range(n_layer)])
        self.norm_f = RMSNorm(d_model)


class MambaLM(nn.Module):  # parameter names as mamba_ssm's MambaLMHeadModel (lm_head tied)
    def __init__(self, vocab, d_model, n_layer, d_state, expand):
        super().__init__()
        self.backbone = Backbone(vocab, d_model, n_layer, d_state, expand)

    def forward(self, ids):
        b = self.backbone
        h = b.embedding(ids)
        for layer in b.layers:
            h = layer(h)
        return F.linear(b.norm_f(h), b.embedding.weight)  # tied head


def write_safetensors(path, tensors):
    """The safetensors format by hand (torch 1.13 has no writer): u64 header size, JSON, data."""
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def export(model, a, ids, loss, out_dir):
    """Writes a mamba_ssm-format model folder and the batch, for `ssm loss` to check the same loss."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = {"d_model": a.d_model, "n_layer": a.n_layer, "vocab_size": a.vocab, "ssm_cfg": {"d_state": a.d_state, "expand": a.expand},
           "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 1,
           "tie_embeddings": True}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), dict(model.state_dict()))
    write_safetensors(os.path.join(out_dir, "input_ids.safetensors"), {"input_ids": ids})
    with open(os.path.join(out_dir, "loss.txt"), "w") as f:
        f.write("%.9g\n" % loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("-b", "--batch", type=int, default=8)
    ap.add_argument("-l", "--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", metavar="DIR", help="write the initial model, one batch and its loss to DIR "
                    "(for `ssm loss -m DIR --input-ids DIR/input_ids.safetensors`) instead of timing")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = MambaLM(a.vocab, a.d_model, a.n_layer, a.d_state, a.expand)
    if a.export:
        ids = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1))
        with torch.no_grad():
            logits = model(ids)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), ids[:, 1:].reshape(-1)).item()
        export(model, a, ids, loss, a.export)
        print(json.dumps({"exported": a.export, "loss": loss}))
        return
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1))
        t0 = time.perf_counter()
        logits = model(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= a.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "shape": {"d_model": a.d_model, "n_layer": a.n_layer, "d_state": a.d_state, "expand": a.expand,
                  "vocab": a.vocab, "batch": a.batch, "seq_len": a.seq_len},
        "median_step_s": med, "median_tok_s": a.batch * a.seq_len / med,
        "step_s": times, "loss_first": losses[0], "loss_last": losses[-1],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
