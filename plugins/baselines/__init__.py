"""The baselines the papers compare against: ResNet-18/50, ViT, Swin and PVT with cross-entropy, and the
class-imbalance losses (focal, class-balanced focal, LDAM-DRW)."""
