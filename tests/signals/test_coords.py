import torch

from fieldlab.signals import grid_coords


def test_samples_sit_at_their_centres():
    coords = grid_coords([(0, 4)], [(0, 4)], [4])
    assert torch.allclose(coords[:, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))


def test_a_finer_grid_over_a_region_lines_up_with_the_coarse_one():
    coarse = grid_coords([(0, 4), (0, 6)], [(0, 4), (0, 6)], [4, 6]).reshape(4, 6, 2)
    fine = grid_coords([(0, 4), (0, 6)], [(0, 4), (0, 6)], [12, 18]).reshape(12, 18, 2)
    # With 3× the samples, every third one (starting at the middle one) is a coarse sample centre.
    assert torch.allclose(fine[1::3, 1::3], coarse)
    region = grid_coords([(0, 4), (0, 6)], [(1, 3), (2, 6)], [2, 4]).reshape(2, 4, 2)
    assert torch.allclose(region, coarse[1:3, 2:6])


def test_the_coordinates_of_some_samples_are_those_of_every_sample_at_their_rows():
    from fieldlab.signals import load_signal

    for signal in (load_signal("sample:camera", max_size=24), load_signal("sample:astronaut", max_size=16)):
        every = signal.coords()
        rows = torch.tensor([0, 5, len(every) // 2, len(every) - 1])
        assert torch.equal(signal.coords_at(rows), every[rows])
