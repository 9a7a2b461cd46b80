"""The networks of the five seed submissions, as the students wrote them or as their torchsummary tables require.

Modules are declared in the seeds' order, so that PyTorch's default initialisation draws the same random numbers
in the same order as the student's code did. Every forward maps (B, 1, 28, 28) -> (B, 10) log-probabilities.
Importing this module has no side effects.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks come from the trainer: while ``masks`` is set (:class:`cnn.draws.Masks`, attached by
    :func:`cnn.train.train`), a training forward multiplies by ``masks(x, p)``, a counter-based
    Bernoulli(1 - p) mask scaled by 1 / (1 - p) that does not depend on the device or on the other seeds of a block.
    Without one (the seeds' own loop in benchmarks/) it is ``nn.Dropout``."""

    masks = None  # a callable (x, p) -> multiplier shaped like x; set per instance by a trainer

    def forward(self, x):
        if self.training and self.masks is not None and 0 < self.p < 1:
            return x * self.masks(x, self.p)
        return super().forward(x)


def conv(cin: int, cout: int, k: int = 3, padding: int = 0, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=(k, k), padding=padding, bias=bias)


def block(cin: int, cout: int, dropout: float | None, *, order: str = "crb", act=nn.ReLU, padding: int = 0):
    """A conv block; ``order`` spells the layer order: c=conv, r=activation, b=BatchNorm, d is added for dropout."""
    make = {"c": lambda: conv(cin, cout, padding=padding), "r": act, "b": lambda: nn.BatchNorm2d(cout)}
    layers = [make[c]() for c in order]
    if dropout is not None:
        layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


S004_FINAL_CHANNELS = (10, 20, 10, 10, 10, 16, 16)  # seed 004's final model: Session7Net with these channels


class Session7Net(nn.Module):
    """The session-7 class network, 13,808 params: seeds 000 model 1, 001 model 1, 004 Net2 (code in 000/001).

    With ``channels=S004_FINAL_CHANNELS`` it is seed 004's final model, 7,958 params, whose table is this
    layout layer for layer with fewer channels. The unused ``self.dropout`` is declared as in the seed's code; it has
    no parameters and is never called, so it changes neither the initialisation nor the table.
    """

    def __init__(self, dropout: float, channels: tuple[int, ...] = (16, 32, 10, 16, 16, 16, 16)):
        super().__init__()
        c1, c2, c3, c4, c5, c6, c7 = channels
        self.convblock1 = block(1, c1, dropout)  # 26
        self.convblock2 = block(c1, c2, dropout)  # 24
        self.convblock3 = nn.Sequential(conv(c2, c3, 1))  # 24
        self.pool1 = nn.MaxPool2d(2, 2)  # 12
        self.convblock4 = block(c3, c4, dropout)  # 10
        self.convblock5 = block(c4, c5, dropout)  # 8
        self.convblock6 = block(c5, c6, dropout)  # 6
        self.convblock7 = block(c6, c7, dropout, padding=1)  # 6
        self.gap = nn.Sequential(nn.AvgPool2d(kernel_size=6))  # 1
        self.convblock8 = nn.Sequential(conv(c7, 10, 1))
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = self.pool1(self.convblock3(self.convblock2(self.convblock1(x))))
        x = self.convblock7(self.convblock6(self.convblock5(self.convblock4(x))))
        x = self.convblock8(self.gap(x))
        return F.log_softmax(x.view(-1, 10), dim=-1)


class S001Model2(nn.Module):
    """Seed 001 model 2, 5,048 params (code in the seed)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.convblock1 = block(1, 8, dropout)  # 26
        self.convblock2 = block(8, 16, dropout)  # 24
        self.convblock3 = nn.Sequential(conv(16, 8, 1))  # 24
        self.pool1 = nn.MaxPool2d(2, 2)  # 12
        self.convblock4 = block(8, 12, dropout)  # 10
        self.convblock5 = block(12, 12, dropout)  # 8
        self.convblock6 = block(12, 12, dropout, padding=1)  # 8
        self.gap = nn.Sequential(nn.AvgPool2d(kernel_size=8))  # 1
        self.convblock7 = nn.Sequential(conv(12, 10, 1))

    def forward(self, x):
        x = self.pool1(self.convblock3(self.convblock2(self.convblock1(x))))
        x = self.convblock6(self.convblock5(self.convblock4(x)))
        x = self.convblock7(self.gap(x))
        return F.log_softmax(x.view(-1, 10), dim=-1)


class S001Model3(nn.Module):
    """Seed 001 model 3, 7,902 params (code in the seed): GELU, two 1x1 skips over resized maps, a sigmoid gate."""

    def __init__(self, dropout: float):
        super().__init__()
        self.convblock1 = block(1, 10, dropout, act=nn.GELU)  # 26
        self.convblock2 = block(10, 14, dropout, act=nn.GELU)  # 24
        self.convblock3 = nn.Sequential(conv(14, 10, 1))  # 24
        self.pool1 = nn.MaxPool2d(2, 2)  # 12
        self.convblock4 = block(10, 14, dropout, act=nn.GELU)  # 10
        self.convblock5 = block(14, 14, dropout, act=nn.GELU)  # 8
        self.convblock6 = block(14, 12, dropout, act=nn.GELU)  # 6
        self.convblock7 = block(12, 12, dropout, act=nn.GELU, padding=1)  # 6
        self.gap = nn.Sequential(nn.AvgPool2d(kernel_size=6))  # 1
        self.convblock8 = nn.Sequential(conv(12, 10, 1))
        self.skip1 = conv(10, 14, 1)
        self.skip2 = conv(14, 12, 1)

    def forward(self, x):
        x = self.pool1(self.convblock3(self.convblock2(self.convblock1(x))))  # (B, 10, 12, 12)
        x4 = self.convblock4(x)  # (B, 14, 10, 10)
        x4 = x4 + self.skip1(F.interpolate(x, size=x4.shape[2:]))
        x6 = self.convblock6(self.convblock5(x4))  # (B, 12, 6, 6)
        x6 = x6 + self.skip2(F.interpolate(x4, size=x6.shape[2:]))
        x7 = self.convblock7(x6)
        # channel gate, (B, 12, 1, 1): the seed's adaptive_avg_pool2d(x7, 1) as a mean, the same numbers on a CPU (to
        # the last bit, forward and backward), whose backward is deterministic on CUDA where the pool's is not
        x7 = x7 * torch.sigmoid(x7.mean((2, 3), keepdim=True))
        x = self.convblock8(self.gap(x7))
        return F.log_softmax(x.view(-1, 10), dim=-1)


class BigNet(nn.Module):
    """The 6,379,786-param baseline with biases, without BatchNorm: seed 002 network 1 (code), 003 model 1 (table)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)  # 28
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)  # 28
        self.pool1 = nn.MaxPool2d(2, 2)  # 14
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)  # 14
        self.conv4 = nn.Conv2d(128, 256, 3, padding=1)  # 14
        self.pool2 = nn.MaxPool2d(2, 2)  # 7
        self.conv5 = nn.Conv2d(256, 512, 3)  # 5
        self.conv6 = nn.Conv2d(512, 1024, 3)  # 3
        self.conv7 = nn.Conv2d(1024, 10, 3)  # 1

    def forward(self, x):
        x = self.pool1(F.relu(self.conv2(F.relu(self.conv1(x)))))
        x = self.pool2(F.relu(self.conv4(F.relu(self.conv3(x)))))
        x = F.relu(self.conv6(F.relu(self.conv5(x))))
        return F.log_softmax(self.conv7(x).view(-1, 10), dim=-1)


class S002Step2(nn.Module):
    """Seed 002 step 2, 9,950 params (code in the seed; the seed prints no summary). Conv -> BN -> ReLU blocks."""

    def __init__(self, dropout: float):
        super().__init__()
        self.convblock1 = block(1, 10, None, order="cbr")  # 26
        self.convblock2 = block(10, 10, None, order="cbr")  # 24
        self.convblock3 = block(10, 20, None, order="cbr")  # 22
        self.pool1 = nn.MaxPool2d(2, 2)  # 11
        self.convblock4 = nn.Sequential(conv(20, 10, 1), nn.BatchNorm2d(10), nn.ReLU())  # 11
        self.convblock5 = block(10, 10, None, order="cbr")  # 9
        self.convblock6 = block(10, 10, None, order="cbr")  # 7
        self.convblock7 = nn.Sequential(conv(10, 10, 1), nn.BatchNorm2d(10), nn.ReLU())  # 7
        self.convblock8 = nn.Sequential(conv(10, 10, 7))  # 1
        self.dropout = Dropout(dropout)

    def forward(self, x):
        x = self.dropout(self.convblock3(self.convblock2(self.convblock1(x))))
        x = self.dropout(self.convblock5(self.convblock4(self.pool1(x))))
        x = self.dropout(self.convblock7(self.convblock6(x)))
        return F.log_softmax(self.convblock8(x).view(-1, 10), dim=-1)


class S003Model2(nn.Module):
    """Seed 003 model 2, 12,854 params, rebuilt from its torchsummary table.

    Three Conv -> ReLU -> BN -> Dropout blocks (26, 24, 22), MaxPool (11), then bare Conv -> ReLU layers: a 1x1 (11),
    two 3x3 (9, 7), a 1x1 (7), and a 7x7 conv to (10, 1, 1) with no activation after it.
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.convblock1 = block(1, 10, dropout)  # 26
        self.convblock2 = block(10, 32, dropout)  # 24
        self.convblock3 = block(32, 10, dropout)  # 22
        self.pool1 = nn.MaxPool2d(2, 2)  # 11
        self.tail = nn.Sequential(
            conv(10, 10, 1),  # 11
            nn.ReLU(),
            conv(10, 10),  # 9
            nn.ReLU(),
            conv(10, 10),  # 7
            nn.ReLU(),
            conv(10, 10, 1),  # 7
            nn.ReLU(),
            conv(10, 10, 7),  # 1
        )

    def forward(self, x):
        x = self.pool1(self.convblock3(self.convblock2(self.convblock1(x))))
        return F.log_softmax(self.tail(x).view(-1, 10), dim=-1)


class S003Model3(nn.Module):
    """Seed 003 model 3, 9,180 params, rebuilt from its torchsummary table.

    Conv -> ReLU -> BN -> Dropout blocks at 26, 24, 22, MaxPool (11), blocks at 9 and 7, a last 3x3 conv to
    (10, 5, 5) and AvgPool to (10, 1, 1). The seed's analysis also says "skip added" (line 124). A skip with
    parameters would be a row of the table, and there is none; a parameter-free one would not be, so the table
    cannot tell. This class is the plain reading; :class:`S003Model3Skip` is the other.
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            block(1, 12, dropout),  # 26
            block(12, 16, dropout),  # 24
            block(16, 12, dropout),  # 22
            nn.MaxPool2d(2, 2),  # 11
            block(12, 16, dropout),  # 9
            block(16, 16, dropout),  # 7
            conv(16, 10),  # 5
            nn.AvgPool2d(5),  # 1
        )

    def forward(self, x):
        return F.log_softmax(self.features(x).view(-1, 10), dim=-1)


class S003Model3Skip(S003Model3):
    """Seed 003 model 3 read with its "skip added": the same modules and table, plus a parameter-free identity skip.

    Only one block of the table has as many output channels as input channels: the 3x3 block 16 -> 16 from 9x9 to
    7x7 (Conv2d-18). It is the one block an identity skip can go around without a projection, which would have been
    a table row; it is also where the same author's model 4 puts its 16 -> 16 1x1 conv, before its one 16 -> 16
    block. The skip is resized the way seed 001 resizes its skips (``F.interpolate``, nearest) and added after the
    block's dropout, as seed 001 adds after its blocks. Longer parameter-free skips also fit the table (12 channels
    from the first block to the third, 16 from the second to the fourth or fifth); the seed says nothing that
    picks one of them, so only the one-block skip is registered.
    """

    def forward(self, x):
        f = self.features
        x4 = f[4](f[3](f[2](f[1](f[0](x)))))  # (B, 16, 9, 9)
        x5 = f[5](x4)  # (B, 16, 7, 7)
        x5 = x5 + F.interpolate(x4, size=x5.shape[2:])
        return F.log_softmax(f[7](f[6](x5)).view(-1, 10), dim=-1)


class S003Model4(nn.Module):
    """Seed 003 model 4, 7,616 params, rebuilt from its torchsummary table.

    The table lists a bias-free 1x1 conv 16 -> 16 (Conv2d-7, 256 params) between the second block's BatchNorm and
    the third 3x3 conv, with output (16, 24, 24), the shape of its input. The seed says a skip was added (line 271),
    and this is the only place the table leaves for one: a residual ``x + conv1x1(x)``. Dropout (p from the recipe)
    follows only the third and fifth blocks, as in the table; no activation follows the last conv.

    A plain 1x1 conv in sequence fits the table as well: :class:`S003Model4Plain`. The two compute the same family
    of functions (``x + Wx = (I + W)x``) and SGD moves ``W`` the same way in both, so they differ only in where
    training starts: at ``I + W0`` here, at ``W0`` there. A third reading, the 1x1 conv as a projection added back
    after the third block, would need a 24 -> 22 crop or resize that neither the table nor the text shows; it is
    not registered.
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.convblock1 = block(1, 8, None)  # 26
        self.convblock2 = block(8, 16, None)  # 24
        self.skip = conv(16, 16, 1)  # 24
        self.convblock3 = block(16, 16, dropout)  # 22
        self.pool1 = nn.MaxPool2d(2, 2)  # 11
        self.convblock4 = block(16, 12, None)  # 9
        self.convblock5 = block(12, 10, dropout)  # 7
        self.convblock6 = conv(10, 10)  # 5
        self.gap = nn.AvgPool2d(5)  # 1

    def forward(self, x):
        x = self.convblock2(self.convblock1(x))
        x = x + self.skip(x)
        x = self.pool1(self.convblock3(x))
        x = self.convblock6(self.convblock5(self.convblock4(x)))
        return F.log_softmax(self.gap(x).view(-1, 10), dim=-1)


class S003Model4Plain(S003Model4):
    """Seed 003 model 4 read with the 1x1 Conv2d-7 as a plain layer in sequence: the same modules and table.

    ``self.skip`` keeps its name so that both readings declare, and so initialise, the same modules in one order.
    """

    def forward(self, x):
        x = self.skip(self.convblock2(self.convblock1(x)))  # (B, 16, 24, 24)
        x = self.pool1(self.convblock3(x))
        x = self.convblock6(self.convblock5(self.convblock4(x)))
        return F.log_softmax(self.gap(x).view(-1, 10), dim=-1)


class S004Init(nn.Module):
    """Seed 004 "Model Init", 593,200 params, rebuilt from its table (which lists only Conv2d and Linear rows).

    Conv2d-3 outputs 10x10 from Conv2d-2's 24x24, and Linear-5 takes 4,096 = 256 x 4 x 4 inputs, so a 2x2 max-pool
    follows conv 2 and conv 4. Those pools and the ReLUs do not appear as rows, so they are functional calls, as in
    the pytorch/examples MNIST net this resembles. All layers have biases (320 = 32 x 9 + 32).
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)  # 26
        self.conv2 = nn.Conv2d(32, 64, 3)  # 24 -> pool 12
        self.conv3 = nn.Conv2d(64, 128, 3)  # 10
        self.conv4 = nn.Conv2d(128, 256, 3)  # 8 -> pool 4
        self.fc1 = nn.Linear(256 * 4 * 4, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        x = self.fc2(F.relu(self.fc1(x.flatten(1))))
        return F.log_softmax(x, dim=-1)


class S004Net1(nn.Module):
    """Seed 004 Net1, 19,470 params, rebuilt from its table, which skips rows 12-14.

    The stated total leaves 9,312 params for the missing rows, and the shapes go from (32, 10, 10) at ReLU-11 to
    (32, 8, 8) at BatchNorm2d-15. Both fit exactly BatchNorm2d-12 (32: 64 params), Conv2d-13 (3x3, 32 -> 32, with
    bias: 9,248) and ReLU-14, the same Conv -> ReLU -> BN pattern as the rows around them. Convs have biases
    (160 = 16 x 9 + 16). Dropout p comes from the recipe.
    """

    def __init__(self, dropout: float):
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(1, 16, 3),  # 26
            nn.ReLU(),
            nn.BatchNorm2d(16),
            nn.Conv2d(16, 16, 3),  # 24
            nn.ReLU(),
            nn.BatchNorm2d(16),
            nn.MaxPool2d(2, 2),  # 12
            nn.ReLU(),
            Dropout(dropout),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(16, 32, 3),  # 10
            nn.ReLU(),
            nn.BatchNorm2d(32),  # the table's missing rows 12-14: this BatchNorm, the next conv and its ReLU
            nn.Conv2d(32, 32, 3),  # 8
            nn.ReLU(),
            nn.BatchNorm2d(32),
            nn.MaxPool2d(2, 2),  # 4
            nn.ReLU(),
            Dropout(dropout),
        )
        self.head = nn.Sequential(nn.Conv2d(32, 10, 3), nn.BatchNorm2d(10), Dropout(dropout), nn.AvgPool2d(2))

    def forward(self, x):
        return F.log_softmax(self.head(self.block2(self.block1(x))).view(-1, 10), dim=-1)
