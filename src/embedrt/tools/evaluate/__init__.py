"""``embedrt eval``: how well cosine similarity of a bundle's embeddings ranks sentence pairs.

Spearman and Pearson correlation (x100) between each pair's cosine similarity and its gold score or
label, per precision, like the tables of the DMetaSoul model cards (csts_dev, lcqmc, afqmc, ...).
``readers`` parses pair files (standard library only), ``metrics`` computes the statistics (NumPy),
``run`` scores a bundle's precisions and the PyTorch reference. Nothing is imported here.
"""
