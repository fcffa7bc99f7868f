"""GraphNet: the Battaglia-style graph network of arXiv:2412.10665, computed on packed real edges.

Encoder MLPs embed node (13 inputs), edge (3) and global (1) features to 64; a graph block — edge update
MLP(x_i, x_j, y_ij, z), node update MLP(x_i, sum_j y'_ij, z), global update MLP(sum_i x'_i, sum_ij y'_ij, z)
— is applied ``n_blocks`` times (one shared block or separate ones); a decoder MLP on the global vector
gives the 64-d latent. Graphs are fully connected without self-loops; i is the receiving object. ``width`` (64,
the paper's) sets the size of every hidden feature; the decoder maps it to the 64-d latent at any width.

Two options change the block, not the parameters (372,556 either way with 12 outputs): ``aggregation``
("sum" as published, or "mean": the sums over j, i and ij divided by their number of terms) and
``residual`` (False as published, or True: each block's new node, edge and global features are added to
its inputs). The default is mean + residual, because the published architecture collapses under Adam at
lr >= 3e-4 (benchmarks/collapse.py, tests/test_graphnet_collapse.py): every MLP ends in a LayerNorm, so
every message has O(1) entries sharing a common direction, and the global update's input is dominated by
sum_ij y'_ij ~ n(n - 1) times that direction (its RMS is ~100 against ~1 for the global vector, on
~10-object events), so at initialisation the output is a function of the object count (it follows the
count in the default too, through the global input, but there training moves it onto the objects). And
with no skip connections the path from the objects to the output runs through 7 to 14 MLPs (28-56 Linear
layers) in series; at lr 1e-3 the compounded updates switch most hidden ReLUs off for every event within
tens of steps and training stays at chance with the output still a function of the count. Mean
aggregation keeps every MLP input O(1) whatever the multiplicity (the count still enters through the
global input), and residual blocks give the objects a path of 4 MLPs to the output. ``PAPER_OPTIONS``
builds the published architecture; a config.json without these keys (a model saved before they existed)
means the published architecture (``saved_without``), not the default.

Speed (DESIGN.md §5): only real objects and real edges are ever computed. A batch's objects are packed
into one [N, 64] tensor and its edges into [E, 64] with vectorised index building (the pair list of an
M-object event is cached per M); gathers are ``index_select`` and sums ``index_add_`` (on the CPU both
several times faster, forward and backward, than advanced indexing). The first Linear of the edge, node
and global MLPs is split over the pieces of their concatenated input, so node and global terms are
multiplied once per node or event and then gathered per edge, instead of once per edge; the receiver
and global terms are added per node before that gather. The global update's edge sum is taken over the
nodes' received sums (sum_ij y'_ij = sum_i sum_j y'_ij), N rows instead of E.

Compiled training (``bucket_shapes = True``, set by the trainer under ``--compile``): the packed sizes N and
E change with every batch, and a compiled graph is specialised to its shapes, so they are rounded up to a
few buckets (:func:`bucket_size`: 8 steps per doubling, at most 12.5% padding). The extra nodes belong to
one extra dummy event (row B of the global features, dropped from the output) and the extra edges join two
of those dummy nodes, so every sum over a real event's objects or edges has exactly its real terms: the
real events' outputs and gradients do not change. Index building runs eagerly (``torch.compiler.disable``,
its sizes depend on the data), the MLPs and sums compiled at the bucketed shapes.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from hepfm.data.features import EDGE_INPUTS, GLOBAL_INPUTS, NODE_INPUTS, edge_features, global_features
from hepfm.errors import ConfigurationError
from hepfm.io.schema import ETA, PHI
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM, MLP
from hepfm.models.registry import register_model

AGGREGATIONS = ("sum", "mean")
PAPER_OPTIONS = {"aggregation": "sum", "residual": False}  # the published architecture (arXiv:2412.10665)


def _is_exporting() -> bool:
    """True while torch.export traces the model (torch >= 2.5; older versions cannot export it anyway)."""
    check = getattr(torch.compiler, "is_exporting", None)
    return bool(check and check())


class GraphBlock(nn.Module):
    """One edge -> node -> global update; messages summed or averaged (``mean``), updates added to the
    inputs (``residual``) or replacing them (the paper)."""

    def __init__(self, width: int, depth: int, mean: bool = False, residual: bool = False):
        super().__init__()
        self.edge = MLP(4 * width, width, depth)
        self.node = MLP(3 * width, width, depth)
        self.glob = MLP(3 * width, width, depth)
        self.mean = mean
        self.residual = residual

    def forward(self, h, e, g, graph: PackedGraph):
        h_new, e_new, g_new = self.update(h, e, g, graph)
        if self.residual:
            return h + h_new, e + e_new, g + g_new
        return h_new, e_new, g_new

    def update(self, h, e, g, graph: PackedGraph):
        """The block's new (node, edge, global) features from the old ones."""
        hr, hs, ee, ge = self.edge.first_layer_parts([h, h, e, g], bias_on=0)
        # Receiver and global terms are added per node, then gathered once per edge.
        per_receiver = hr.add_(ge.index_select(0, graph.node_event))
        pre = ee.add_(per_receiver.index_select(0, graph.receiver)).add_(hs.index_select(0, graph.sender))
        e = self.edge.rest(pre)
        received = h.new_zeros(h.shape).index_add_(0, graph.receiver, e)
        if self.mean:
            received = received / graph.n_senders.to(received.dtype)
        hh, ha, gn = self.node.first_layer_parts([h, received, g], bias_on=0)
        h = self.node.rest(hh.add_(ha).add_(gn.index_select(0, graph.node_event)))
        n_events = g.shape[0]
        node_sum = g.new_zeros((n_events, h.shape[1])).index_add_(0, graph.node_event, h)
        # sum_ij y'_ij = sum_i received_i: N rows to add instead of E. With means, every object of an
        # event receives from the same n - 1 senders, so the mean over edges is the mean of received means.
        edge_sum = g.new_zeros((n_events, e.shape[1])).index_add_(0, graph.node_event, received)
        if self.mean:
            n_nodes = graph.n_nodes.to(g.dtype)
            node_sum, edge_sum = node_sum / n_nodes, edge_sum / n_nodes
        g = self.glob(torch.cat([node_sum, edge_sum, g], dim=-1))
        return h, e, g


def bucket_size(n: int) -> int:
    """``n`` rounded up to the next number of the form m * 2^k with m in 8..15 (16 at least)."""
    if n <= 16:
        return 16
    step = 1 << (n.bit_length() - 4)  # 8 buckets between 2^(b-1) and 2^b
    return -(-n // step) * step


class PackedGraph:
    """Index tensors of a batch's real objects and real (ordered, i != j) object pairs.

    With ``bucket``, padded to bucketed sizes with a dummy event (index B) whose dummy nodes and edges touch
    no real event (see the module docstring); ``n_pad_nodes`` extra object rows must then be appended.
    """

    _pairs_cache: ClassVar[dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]] = {}

    def __init__(self, mask: torch.Tensor, bucket: bool = False):
        n_events, m = mask.shape
        recv_slot, send_slot = self._pairs(m, mask.device)
        flat = mask.reshape(-1)
        node_id = (flat.long().cumsum(0) - 1).view(n_events, m)
        valid = mask[:, recv_slot] & mask[:, send_slot] & (recv_slot != send_slot)
        edge_event, pair = valid.nonzero(as_tuple=True)
        self.receiver = node_id[edge_event, recv_slot[pair]]
        self.sender = node_id[edge_event, send_slot[pair]]
        self.edge_event = edge_event
        self.node_event = mask.nonzero(as_tuple=True)[0]
        self.mask = mask
        n_objects = mask.sum(dim=1, keepdim=True)
        # Divisors for mean aggregation: n per event, n - 1 senders per object (1 where there is nothing to
        # average, so an edgeless object's mean message stays 0).
        self.n_nodes = n_objects.clamp_min(1)
        self.n_senders = (n_objects - 1).clamp_min(1).index_select(0, self.node_event)
        self.n_pad_nodes = 0
        if bucket:
            self._pad(n_events)

    def _pad(self, n_events: int) -> None:
        n_real, e_real = len(self.node_event), len(self.receiver)
        dev, long = self.node_event.device, self.node_event.dtype
        self.n_pad_nodes = bucket_size(n_real + 2) - n_real  # >= 2, so dummy edges join distinct objects
        e_pad = bucket_size(e_real) - e_real
        self.node_event = torch.cat([self.node_event, torch.full((self.n_pad_nodes,), n_events, device=dev,
                                                                 dtype=long)])
        dummy = torch.arange(e_pad, device=dev, dtype=long) % 2 + n_real  # edges n_real <-> n_real + 1
        self.receiver = torch.cat([self.receiver, dummy])
        self.sender = torch.cat([self.sender, (dummy - n_real + 1) % 2 + n_real])
        self.edge_event = torch.cat([self.edge_event, torch.full((e_pad,), n_events, device=dev, dtype=long)])
        one = torch.ones((1, 1), device=dev, dtype=self.n_nodes.dtype)
        self.n_nodes = torch.cat([self.n_nodes, one])
        self.n_senders = torch.cat([self.n_senders, one.expand(self.n_pad_nodes, 1)])

    def pad_objects(self, objects: torch.Tensor) -> torch.Tensor:
        """Real object rows [N, 7] followed by the dummy nodes' rows (zeros, distinct eta: finite Delta R)."""
        if not self.n_pad_nodes:
            return objects
        filler = objects.new_zeros((self.n_pad_nodes, objects.shape[1]))
        filler[:, ETA] = torch.arange(self.n_pad_nodes, device=objects.device, dtype=objects.dtype)
        return torch.cat([objects, filler])

    @classmethod
    def _pairs(cls, m: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(receiver, sender) slots of all m x m ordered pairs; self-pairs are dropped by the validity mask."""
        if _is_exporting():  # a symbolic m (ONNX export with a variable object count)
            slots = torch.arange(m, device=device)
            return slots[:, None].expand(m, m).reshape(-1), slots[None, :].expand(m, m).reshape(-1)
        key = (m, str(device))
        if key not in cls._pairs_cache:
            i, j = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
            cls._pairs_cache[key] = (i.reshape(-1).to(device), j.reshape(-1).to(device))
        return cls._pairs_cache[key]


@register_model
class GraphNet(Backbone):
    """The graph network of arXiv:2412.10665; 372,556 parameters with 12 outputs and separate blocks.

    Defaults: mean aggregation and residual blocks; ``GraphNet(**PAPER_OPTIONS)`` is the published
    architecture (sum aggregation, no residual connections). See the module docstring for why.
    """

    name = "graphnet"
    saved_without: ClassVar[dict] = PAPER_OPTIONS  # models saved before these options existed
    compile_bucketed = True  # compiled training pads packed sizes to buckets (bucket_shapes)

    def __init__(self, n_outputs: int = 1, width: int = LATENT_DIM, depth: int = 4, n_blocks: int = 4,
                 share_blocks: bool = False, aggregation: str = "mean", residual: bool = True,
                 mask_token: bool = False):
        config = dict(width=width, depth=depth, n_blocks=n_blocks, share_blocks=share_blocks,
                      aggregation=aggregation, residual=residual)
        super().__init__(n_outputs, {**config, "mask_token": True} if mask_token else config)
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ConfigurationError(f"width must be a positive integer, got {width!r}")
        if aggregation not in AGGREGATIONS:
            raise ConfigurationError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if not isinstance(residual, bool):
            raise ConfigurationError(f"residual must be true or false, got {residual!r}")
        self.node_encoder = MLP(NODE_INPUTS, width, depth)
        self.edge_encoder = MLP(EDGE_INPUTS, width, depth)
        self.global_encoder = MLP(GLOBAL_INPUTS, width, depth)
        n_distinct = 1 if share_blocks else n_blocks
        mean = aggregation == "mean"
        self.blocks = nn.ModuleList([GraphBlock(width, depth, mean, residual) for _ in range(n_distinct)])
        self.n_blocks = n_blocks
        # The latent is 64-d whatever the width (every head and fine-tuning reads 64); at width 64 this is the
        # original decoder, so saved models load unchanged.
        self.decoder = MLP(width, LATENT_DIM, depth)
        self.object_width = width
        self._init_mask_token(mask_token, width)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None,
               extra: torch.Tensor | None = None) -> torch.Tensor:
        """The latent; ``hidden`` [B, M] marks objects replaced by the mask token (masked-object task);
        ``extra`` [B, M, 64], if given, is added to the encoded objects (jet embeddings of a hierarchical
        model)."""
        return self._propagate(x, mask, hidden, extra)[0]

    def encode_objects(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None,
                       extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latent, each object's node features after the last block [B, M, width], zeros on padding)."""
        latent, h = self._propagate(x, mask, hidden, extra)
        mask = mask.bool()
        objects = h.new_zeros((*mask.shape, h.shape[1]))
        objects[mask] = h[:int(mask.sum())]  # the packed rows are the real objects in order (then dummy rows)
        return latent, objects

    def _propagate(self, x, mask, hidden, extra) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latent [B, 64], the packed node features after the last block [N, width])."""
        graph, objects, hidden_rows, counts = _pack(x, mask, hidden, self.bucket_shapes)
        eta, phi = objects[:, ETA], objects[:, PHI]
        h = self.node_encoder(self.scaling.node_features(objects))
        h = self._hide(h, hidden_rows)
        if extra is not None:
            rows = extra[mask.bool()]
            if graph.n_pad_nodes:  # bucketed shapes: the dummy rows get nothing
                rows = torch.cat([rows, rows.new_zeros(graph.n_pad_nodes, rows.shape[1])])
            h = h + rows
        recv, send = graph.receiver, graph.sender
        e = self.edge_encoder(edge_features(eta.index_select(0, recv), phi.index_select(0, recv),
                                            eta.index_select(0, send), phi.index_select(0, send)))
        g = self.global_encoder(global_features(counts, x.dtype))
        for k in range(self.n_blocks):
            h, e, g = self.blocks[k % len(self.blocks)](h, e, g, graph)
        return self.decoder(g)[:x.shape[0]], h


def _pack_eager(x, mask, hidden, bucket: bool):
    """(graph, object rows, hidden flags of the rows or None, object count per event) of a batch."""
    mask = mask.bool()
    graph = PackedGraph(mask, bucket)
    objects = graph.pad_objects(x[mask])  # [N, 7] real objects only (+ dummy rows when bucketed)
    counts = mask.sum(dim=1)
    rows = None if hidden is None else hidden[mask]
    if graph.n_pad_nodes:
        counts = torch.cat([counts, counts.new_ones(1)])
        if rows is not None:
            rows = torch.cat([rows, rows.new_zeros(graph.n_pad_nodes)])
    return graph, objects, rows, counts


# Data-dependent sizes: run eagerly inside a compiled model (a graph break), except while exporting (ONNX).
_pack_compiled = torch.compiler.disable(_pack_eager)


def _pack(x, mask, hidden, bucket: bool):
    return _pack_eager(x, mask, hidden, bucket) if _is_exporting() else _pack_compiled(x, mask, hidden, bucket)
