"""SANCL's image path and its attention across fields, as the paper describes them.

- `RoiImageEncoder`: the image encoder of MCR (Liu et al., 2021) that SANCL's section 3.3 takes
  over ("same as Liu et al. (2021)"): a linear map of the 2048-d RoI features to the image
  width, dropout, pre-norm transformer layers and a final LayerNorm.
- `ProductAwareAttention`: one field's sequence gathers the product's sequence of the same
  modality, H'' = H' + softmax_p(relu(P W + b) H'^T)^T P. SANCL uses it for review text over
  product text (section 3.4, "cross-field text attention") and for review regions over
  product regions (the "cross-image attention" of section 3.4).
- `Predictor`: the two-layer tanh network the released code puts in front of one side of each
  contrastive score (`model.architecture: released` only; the paper's eq. 10 has none).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import masked_softmax
from .masked_layers import MaskedAttention, zero_padding


class PreNormLayer(nn.Module):
    """One pre-norm transformer encoder layer (normalise, sub-layer, dropout, residual):

        x = x + dropout(attention(LN(x)))
        x = x + dropout(W2 dropout_relu(relu(W1 LN(x))))

    x [B, L, dim], mask [B, L] (True = a real region) -> [B, L, dim]. Attention dropout acts on
    the attention weights, `relu_dropout` on the feed-forward's hidden units.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float,
                 attention_dropout: float, relu_dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = MaskedAttention(dim, heads, dropout=attention_dropout)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.hidden = nn.Linear(dim, ffn_dim)
        self.out = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.relu_dropout = nn.Dropout(relu_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed = self.attention_norm(x)
        x = x + self.dropout(self.attention(normed, normed, mask))
        hidden = self.relu_dropout(torch.relu(self.hidden(self.feed_forward_norm(x))))
        return x + self.dropout(self.out(hidden))


class RoiImageEncoder(nn.Module):
    """RoI features [B, R, feature_dim] and their mask [B, R] -> [B, R, dim], 0 at padding.

    Linear feature_dim -> dim, dropout, `layers` pre-norm layers (padded regions are masked
    out as keys), a final LayerNorm. At the defaults (2048 -> 128, 3 layers, 4 heads,
    feed-forward 512) it has 857,344 parameters: 262,272 + 3 x 198,272 + 256.
    """

    def __init__(self, feature_dim: int, dim: int, layers: int, heads: int, ffn_dim: int,
                 dropout: float, attention_dropout: float, relu_dropout: float):
        super().__init__()
        self.project = nn.Linear(feature_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            PreNormLayer(dim, heads, ffn_dim, dropout, attention_dropout, relu_dropout)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.project(features.float()))
        for layer in self.layers:
            x = layer(x, mask)
        return zero_padding(self.norm(x), mask)


class ProductAwareAttention(nn.Module):
    """Review positions gather the product's positions of the same modality.

    product [B, Lp, d] with product_mask [B, Lp], review [B, Lr, d] with review_mask [B, Lr]
    -> [B, Lr, d]: review + attention^T product, attention = softmax over the real product
    positions of relu(product W + b) review^T; padded review positions are 0. A row whose
    product has no real position gathers nothing (the review comes back unchanged).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, product: torch.Tensor, product_mask: torch.Tensor, review: torch.Tensor,
                review_mask: torch.Tensor) -> torch.Tensor:
        keys = torch.relu(self.transform(product))                       # [B, Lp, d]
        scores = keys @ review.transpose(1, 2)                            # [B, Lp, Lr]
        attention = masked_softmax(scores, product_mask[:, :, None], dim=1)
        # padded product rows may hold anything: their weight is 0, but 0 x inf is not 0, so
        # they are replaced (not multiplied) by zeros before the product
        values = torch.where(product_mask[..., None], product, 0.0)
        gathered = attention.transpose(1, 2).to(product.dtype) @ values  # [B, Lr, d]
        return torch.where(review_mask[..., None], review + gathered, 0.0)


class Predictor(nn.Module):
    """x [N, d] -> [N, d]: Linear, tanh, Linear (2 (d^2 + d) parameters)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
