import pytest
import torch
from torch import nn

from service.engine import products


@pytest.mark.parametrize("rows", [1, 2, 7, 8, 9, 15, 32, 64, 65, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_computes_what_the_layer_computes(rows, bias):
    torch.manual_seed(rows)
    layer = nn.Linear(64, 96, bias=bias)
    x = torch.randn(rows, 1, 64)
    y = products.linear(layer, x)
    assert y.shape == (rows, 1, 96)
    assert y.is_contiguous()
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 3, 13, 40])
def test_left_product_is_x_times_the_weight_transposed(rows):
    weight, x = torch.randn(1000, 64), torch.randn(rows, 64)
    torch.testing.assert_close(products.left_product(weight, x), x @ weight.T, rtol=1e-5, atol=1e-4)


def test_linear_reads_a_packed_view():
    layer = nn.Linear(64, 32)
    packed = torch.randn(10, 64)
    part = packed[3:7].view(2, 2, 64)  # one part of a packed pass
    torch.testing.assert_close(products.linear(layer, part), layer(part))


def test_rows_are_padded_to_what_mkl_computes_fastest():
    assert [products.padded_rows(r) for r in (1, 2, 8, 9, 16, 31, 33)] == [2, 2, 8, 16, 16, 32, 40]
