"""My step: five 3×3 convolutions, a global average pool and a 1×1 head (7,578 parameters)."""

import torch.nn.functional as F
from torch import nn

from cnn.zoo import declare


def block(cin, cout, p):  # convolution, BatchNorm, ReLU, dropout
    return [nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout(p)]


class Gap(nn.Module):
    def __init__(self, recipe):
        super().__init__()
        p = recipe.dropout
        self.net = nn.Sequential(
            *block(1, 8, p), *block(8, 12, p), nn.MaxPool2d(2), *block(12, 16, p), *block(16, 16, p),
            *block(16, 16, p), nn.AvgPool2d(6), nn.Conv2d(16, 10, 1),  # 6x6 -> 1x1
        )  # fmt: skip

    def forward(self, x):
        return F.log_softmax(self.net(x).view(-1, 10), dim=-1)  # (B, 10); view(-1, 10) keeps a block's seeds apart


declare("my-gap", Gap, epochs=15, batch_size=64, dropout=0.05)
