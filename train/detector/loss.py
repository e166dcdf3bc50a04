"""MultiBox loss of RetinaFace: smooth-L1 box regression on positives, cross-entropy on
positives plus the hardest negatives (3 per positive), as biubug6/Pytorch_Retinaface.

The landmark term is left out: these data sets have no landmark labels, and the landmark
head is frozen (``net.freeze_landmarks``). Ignored anchors (label -1, see ``anchors.match``)
take part in neither term.
"""
import torch
import torch.nn.functional as F

from train.detector.anchors import anchor_xyxy, match

NEG_POS_RATIO = 3
LOC_WEIGHT = 2.0  # the original's cfg_mnet loc_weight


def build_targets(batch_boxes, batch_ignore, anchors):
    """Match every image's faces: (labels (N, A) int64, targets (N, A, 4))."""
    boxes_a = anchor_xyxy(anchors)
    labels, targets = [], []
    for boxes, ignore in zip(batch_boxes, batch_ignore):
        lab, tgt = match(boxes, anchors, ignore, anchors_xyxy=boxes_a)
        labels.append(lab)
        targets.append(tgt)
    return torch.stack(labels), torch.stack(targets)


class MultiBoxLoss(torch.nn.Module):
    """``forward(loc, conf_logits, labels, targets)`` -> (total, box term, class term), all scalars.

    Both terms are normalised by the number of positives in the batch (at least 1), as the
    original. ``min_negatives``: hard negatives kept per image even without a positive; the
    original keeps none there (3 x 0), which would let crops without faces teach nothing,
    while such crops are exactly where false positives are learnt away.
    """

    def __init__(self, neg_pos_ratio=NEG_POS_RATIO, loc_weight=LOC_WEIGHT, min_negatives=8):
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight
        self.min_negatives = min_negatives

    def forward(self, loc, conf, labels, targets):
        positive = labels == 1
        n_pos = positive.sum()
        norm = n_pos.clamp(min=1).to(loc.dtype)
        if n_pos:
            loss_box = F.smooth_l1_loss(loc[positive], targets[positive], reduction="sum")
        else:
            loss_box = loc.sum() * 0.0  # keeps the graph (and a zero gradient) for DDP-like callers
        ce = F.cross_entropy(conf.reshape(-1, 2), labels.clamp(min=0).reshape(-1),
                             reduction="none").view(labels.shape)
        negative = self.hard_negatives(ce.detach(), labels)
        loss_cls = ce[positive | negative].sum()
        return (self.loc_weight * loss_box + loss_cls) / norm, loss_box / norm, loss_cls / norm

    def hard_negatives(self, ce, labels):
        """Mask of the highest-loss background anchors: 3 per positive (at least
        ``min_negatives``) in each image, never more than there are."""
        candidate = labels == 0
        ranked = ce.masked_fill(~candidate, -1.0)
        order = ranked.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        n_neg = (self.neg_pos_ratio * (labels == 1).sum(dim=1, keepdim=True)).clamp(min=self.min_negatives)
        n_neg = torch.minimum(n_neg, candidate.sum(dim=1, keepdim=True))
        return (rank < n_neg) & candidate
