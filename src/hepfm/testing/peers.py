"""GraphNet written two other ways, as the throughput benchmark's peers and as a check of GraphNet itself.

* :class:`PygGraphNet`: PyTorch Geometric ``MetaLayer`` blocks on a sparse ``edge_index``, fed either one
  ``Data`` per event (:func:`event_graphs`, collated by ``Batch.from_data_list``) or a batched graph built
  with ``dense_to_sparse`` (:func:`vectorised_graph`);
* :class:`DenseGraphNet`: edges as a padded [B, M, M, 64] tensor.

Both implement the paper's architecture (:data:`hepfm.models.graphnet.PAPER_OPTIONS`: sum aggregation, no
residual connections, four separate blocks) with GraphNet's parameter names up to the block layers, so
:func:`peers_from` gives them a GraphNet's exact weights. Needs the ``[pyg]`` extra (torch_geometric).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Batch, Data
from torch_geometric.nn import MetaLayer
from torch_geometric.utils import dense_to_sparse, scatter

from hepfm.data.datasets import EventData
from hepfm.data.features import (
    EDGE_INPUTS,
    ETA,
    GLOBAL_INPUTS,
    NODE_INPUTS,
    PHI,
    FeatureScaling,
    edge_features,
    global_features,
)
from hepfm.models import GraphNet
from hepfm.models.graphnet import PAPER_OPTIONS
from hepfm.models.layers import LATENT_DIM

#: Linear layers per MLP and graph blocks per model, as in the paper.
DEPTH = 4
N_BLOCKS = 4


# --------------------------------------------------------------------------------------------- inputs
def event_graphs(objects: torch.Tensor, counts: torch.Tensor, labels: torch.Tensor) -> list[Data]:
    """One PyG ``Data`` per event: its rows, a fully connected ``edge_index`` without self-loops, its label."""
    templates = {}
    graphs = []
    for k, n in enumerate(counts.tolist()):
        if n not in templates:
            i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            off = i != j
            templates[n] = torch.stack([j[off], i[off]])  # row 0 = source j, row 1 = target (receiver) i
        graphs.append(Data(x=objects[k, :n], edge_index=templates[n], y=labels[k:k + 1]))
    return graphs


def vectorised_graph(data: EventData, index: torch.Tensor):
    """A batched PyG graph built from the stored tensors with ``dense_to_sparse`` (no per-event Python)."""
    x, mask, y = data.batch(index)
    m = mask.shape[1]
    adj = mask[:, :, None] & mask[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=mask.device)
    edge_index, _ = dense_to_sparse(adj, mask)
    batch = mask.nonzero(as_tuple=True)[0]
    return x[mask], edge_index, batch, mask.sum(dim=1), y


# --------------------------------------------------------------------------------------------- models
def mlp(n_in: int, width: int = LATENT_DIM, depth: int = DEPTH) -> nn.Sequential:
    """The paper's MLP as a plain Sequential: ``depth`` Linear layers, ReLU between, LayerNorm."""
    layers: list[nn.Module] = []
    for k in range(depth):
        if k:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in if k == 0 else width, width))
    layers.append(nn.LayerNorm(width))
    return nn.Sequential(*layers)


class EdgeModel(nn.Module):
    """MetaLayer edge update: MLP([x_i, x_j, y_ij, u]) with i the receiver."""

    def __init__(self):
        super().__init__()
        self.mlp = mlp(4 * LATENT_DIM)

    def forward(self, src, dst, edge_attr, u, batch):
        return self.mlp(torch.cat([dst, src, edge_attr, u[batch]], dim=-1))


class NodeModel(nn.Module):
    """MetaLayer node update: MLP([x_i, sum_j y'_ij, u])."""

    def __init__(self):
        super().__init__()
        self.mlp = mlp(3 * LATENT_DIM)

    def forward(self, x, edge_index, edge_attr, u, batch):
        received = scatter(edge_attr, edge_index[1], dim=0, dim_size=x.size(0), reduce="sum")
        return self.mlp(torch.cat([x, received, u[batch]], dim=-1))


class GlobalModel(nn.Module):
    """MetaLayer global update: MLP([sum_i x'_i, sum_ij y'_ij, u])."""

    def __init__(self):
        super().__init__()
        self.mlp = mlp(3 * LATENT_DIM)

    def forward(self, x, edge_index, edge_attr, u, batch):
        node_sum = scatter(x, batch, dim=0, dim_size=u.size(0), reduce="sum")
        edge_sum = scatter(edge_attr, batch[edge_index[0]], dim=0, dim_size=u.size(0), reduce="sum")
        return self.mlp(torch.cat([node_sum, edge_sum, u], dim=-1))


class _PeerGraphNet(nn.Module):
    """The layers every peer shares with GraphNet (same names, so its weights load by renaming blocks only)."""

    def __init__(self, n_outputs: int, make_block):
        super().__init__()
        self.scaling = FeatureScaling()
        self.node_encoder = mlp(NODE_INPUTS)
        self.edge_encoder = mlp(EDGE_INPUTS)
        self.global_encoder = mlp(GLOBAL_INPUTS)
        self.blocks = nn.ModuleList([make_block() for _ in range(N_BLOCKS)])
        self.decoder = mlp(LATENT_DIM)
        self.head = nn.Linear(LATENT_DIM, n_outputs)


class PygGraphNet(_PeerGraphNet):
    """GraphNet written the PyTorch Geometric way: ``MetaLayer`` blocks on a sparse ``edge_index``."""

    def __init__(self, n_outputs: int = 12):
        super().__init__(n_outputs, lambda: MetaLayer(EdgeModel(), NodeModel(), GlobalModel()))

    def forward(self, rows, edge_index, batch, n_objects):
        """Outputs [B, n_outputs] from packed rows [N, 7], ``edge_index`` [2, E], node-to-event ``batch``, counts."""
        eta, phi = rows[:, ETA], rows[:, PHI]
        src, dst = edge_index
        h = self.node_encoder(self.scaling.node_features(rows))
        e = self.edge_encoder(edge_features(eta[dst], phi[dst], eta[src], phi[src]))
        u = self.global_encoder(global_features(n_objects, rows.dtype))
        for block in self.blocks:
            h, e, u = block(h, edge_index, e, u, batch)
        return self.head(self.decoder(u))

    def forward_batch(self, graph: Batch):
        """Outputs for a ``Batch`` collated from per-event ``Data``."""
        return self(graph.x, graph.edge_index, graph.batch, graph.ptr.diff())


class DenseBlock(nn.Module):
    """Naive dense graph block: concatenated inputs on all M x M slots, masks multiplying the sums."""

    def __init__(self):
        super().__init__()
        self.edge = mlp(4 * LATENT_DIM)
        self.node = mlp(3 * LATENT_DIM)
        self.glob = mlp(3 * LATENT_DIM)

    def forward(self, h, e, g, node_mask, pair_mask):
        b, m, w = h.shape
        e = self.edge(torch.cat([h[:, :, None].expand(b, m, m, w), h[:, None].expand(b, m, m, w), e,
                                 g[:, None, None].expand(b, m, m, w)], dim=-1))
        e_real = e * pair_mask
        h = self.node(torch.cat([h, e_real.sum(dim=2), g[:, None].expand(b, m, w)], dim=-1))
        g = self.glob(torch.cat([(h * node_mask).sum(dim=1), e_real.sum(dim=(1, 2)), g], dim=-1))
        return h, e, g


class DenseGraphNet(_PeerGraphNet):
    """GraphNet on padded tensors: nodes [B, M, 64], edges [B, M, M, 64]; padding is computed, then masked."""

    def __init__(self, n_outputs: int = 12):
        super().__init__(n_outputs, DenseBlock)

    def forward(self, x, mask):
        """Outputs [B, n_outputs] from padded rows [B, M, 7] and mask [B, M]."""
        m = mask.shape[1]
        eta, phi = x[..., ETA], x[..., PHI]
        pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=mask.device)
        pair_mask = pair[..., None].to(x.dtype)
        node_mask = mask[..., None].to(x.dtype)
        h = self.node_encoder(self.scaling.node_features(x))
        e = self.edge_encoder(edge_features(eta[:, :, None], phi[:, :, None], eta[:, None, :], phi[:, None, :]))
        g = self.global_encoder(global_features(mask.sum(dim=1), x.dtype))
        for block in self.blocks:
            h, e, g = block(h, e, g, node_mask, pair_mask)
        return self.head(self.decoder(g))


_PEER_BLOCK_NAMES = {PygGraphNet: ("edge_model.mlp", "node_model.mlp", "global_model.mlp"),
                     DenseGraphNet: ("edge", "node", "glob")}


def peer_state_dict(graphnet: GraphNet, peer_class: type) -> dict[str, torch.Tensor]:
    """GraphNet's weights renamed for a peer class: ``linears.k`` -> Sequential index 2k, ``norm`` -> last."""
    edge, node, glob = _PEER_BLOCK_NAMES[peer_class]
    if graphnet.n_blocks != N_BLOCKS or len(graphnet.blocks) != N_BLOCKS:
        raise ValueError("peers implement the paper's GraphNet: 4 separate blocks")
    if any(graphnet.config.get(k) != v for k, v in PAPER_OPTIONS.items()):
        raise ValueError(f"peers implement the paper's GraphNet: build it with {PAPER_OPTIONS}")
    out = {}
    for key, value in graphnet.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            parts[2] = {"edge": edge, "node": node, "glob": glob}[parts[2]]
        if "linears" in parts:
            k = parts.index("linears")
            parts[k:k + 2] = [str(2 * int(parts[k + 1]))]
        elif "norm" in parts:
            parts[parts.index("norm")] = str(2 * DEPTH - 1)
        out[".".join(parts)] = value
    return out


def peers_from(graphnet: GraphNet) -> tuple[PygGraphNet, DenseGraphNet]:
    """PyG and dense models carrying GraphNet's exact weights (and feature scaling)."""
    peers = []
    for cls in (PygGraphNet, DenseGraphNet):
        peer = cls(graphnet.n_outputs)
        peer.load_state_dict(peer_state_dict(graphnet, cls), strict=True)
        peers.append(peer)
    return peers[0], peers[1]
