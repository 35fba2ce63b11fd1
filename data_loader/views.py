"""Fixed views (trainer.distill.views): each training image's augmentation is one of k views, view v
of image i seeded by (i, v) alone, so it is the same pixels in every epoch, run and process. Each
epoch draws one view per image (seeded by the epoch and the batch: a resumed run draws the same).
A teacher's logits can then be computed once per view and handed out with the images instead of a
teacher forward pass on every step."""

import numpy as np

from data_loader.transforms import batch_seed, reseed

VIEW_STREAM = 0x5EED_F1E5  # keeps the view seeds apart from the batches' streams


def view_seed(index, view):
    """The augmentation seed of view `view` of image `index`."""
    return int(np.random.SeedSequence([VIEW_STREAM, index, view]).generate_state(1)[0])


class FixedViews:
    """k fixed views per image of an ArrayDataset; `stored` (N, k, ...): one tensor per view, handed
    out as each sample's third item (the teacher's logits of that view), or None."""

    def __init__(self, k, stored=None):
        if stored is not None and stored.shape[1] != k:
            raise ValueError(f"stored values for {stored.shape[1]} views, expected {k}")
        self.k, self.stored = k, stored

    def image(self, dataset, index, view):
        """View `view` of image `index` of `dataset`, as its transform makes it."""
        reseed(dataset.transform, view_seed(index, view))
        return dataset.transform(image=dataset.images[index])["image"]

    def choose(self, n, epoch_seed, number):
        """The view of each of the n images of batch `number` of the epoch seeded `epoch_seed`."""
        return np.random.default_rng(batch_seed(epoch_seed, number)).integers(self.k, size=n)

    def samples(self, dataset, indices, epoch_seed, number):
        views = self.choose(len(indices), epoch_seed, number)
        out = []
        for i, v in zip(indices, views.tolist()):
            sample = (self.image(dataset, i, v), int(dataset.labels[i]))
            out.append(sample if self.stored is None else (*sample, self.stored[i, v]))
        return out
