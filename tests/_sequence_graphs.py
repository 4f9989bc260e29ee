"""Small sequence networks that together use every sequence op: the registry-wide tests
(end-to-end gradient checks, the batch split, torch equality) run them beside the image
graphs."""

# Token ids through embeddings, a pre-norm causal attention block with dropout on the
# weights and ALiBi, every recurrence, and a per-token head (a language model's per-token
# loss).
TOKENS = """
network tokens {
    input x: [5] int
    e = x -> emb: embedding(7, 6) -> pos: pos_embedding -> sinusoidal
    a = e -> ln1: layernorm -> attn: attention(2, causal=true, dropout=0.2, alibi=3)
    h = e + a
    f = h -> ln2: layernorm -> fc1: linear(8) -> gelu -> fc2: linear(6) -> softmax
    output (h + f) -> cell: rnn(4) -> bilstm: lstm(3, bidirectional=true)
        -> gru2: gru(4, layers=2) -> head: linear(7)
}
"""

# An image cut into patches (a tiny ViT), read out by every pooling over time.
PATCHES = """
network patches {
    input x: [2, 4, 4]
    s = x -> patches(2) -> embed: linear(6) -> cls: class_token -> attn: attention(3, alibi=8)
    output (s -> first, s -> mean, s -> last, s -> lstm1: lstm(6, last=true)) -> add
        -> fc: linear(3)
}
"""

ALL = {"tokens": TOKENS, "patches": PATCHES}
