"""Tests for tfdp.data.datasets: the loaders, their errors, and training subsets."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfdp import data
from tfdp.serving import model_card

SHAPE = (6, 6, 3)  # Tiny images keep the folder tests fast.


def _write_image(path, image):
    """Writes a [H, W, C] uint8 array as PNG or JPEG, chosen by the extension of path."""
    encode = tf.io.encode_png if path.endswith('.png') else tf.io.encode_jpeg
    tf.io.write_file(path, encode(tf.constant(image, tf.uint8)))


def _make_folder(root, classes=('dog', 'cat', 'eel'), train_per_class=4, test_per_class=2,
                 shape=SHAPE):
    """Writes root/{train,test}/<class>/NN.png; every pixel of image i of class c is 50 * c + i.

    Class index c is the position in sorted(classes), so the loader's labels can be checked
    against the pixel values.
    """
    for split, count in (('train', train_per_class), ('test', test_per_class)):
        for label, name in enumerate(sorted(classes)):
            os.makedirs(os.path.join(root, split, name))
            for i in range(count):
                _write_image(os.path.join(root, split, name, f'{i:02d}.png'),
                             np.full(shape, 50 * label + i, np.uint8))
    return str(root)


def _indexed_dataset(n=200):
    """A Dataset whose train image i has every pixel equal to i (n <= 256), to track indices."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1))
    return data.Dataset(name='indexed', train_images=images.copy(),
                        train_labels=np.arange(n, dtype=np.int64) % 2,
                        test_images=np.zeros((3, 2, 2, 1), np.uint8),
                        test_labels=np.zeros(3, np.int64), class_names=('a', 'b'),
                        mean=(0.5,), std=(0.5,), augment='none')


# Registry.

def test_registry_holds_the_loaders():
    assert sorted(data.DATASETS) == ['cifar10', 'digits', 'fashion_mnist', 'folder', 'mnist', 'npz',
                                    'synthetic']


def test_unknown_dataset_lists_valid_names():
    valid = r"\['cifar10', 'digits', 'fashion_mnist', 'folder', 'mnist', 'npz', 'synthetic'\]"
    with pytest.raises(ValueError, match=r"'mnistt'.*" + valid):
        data.load_dataset('mnistt')


def test_dataset_rejects_inconsistent_arrays():
    good = _indexed_dataset()
    with pytest.raises(data.DataError, match='uint8'):
        dataclasses.replace(good, train_images=good.train_images.astype(np.float32))
    with pytest.raises(data.DataError, match=r'labels span \[0, 2\]'):
        dataclasses.replace(good, train_labels=good.train_labels * 2)
    with pytest.raises(data.DataError, match="augment='flip'"):
        dataclasses.replace(good, augment='flip')


# digits.

def test_digits_shapes_and_scaling():
    dataset = data.load_dataset('digits', data_dir='/ignored')
    assert dataset.train_images.shape == (1437, 8, 8, 1)
    assert dataset.test_images.shape == (360, 8, 8, 1)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int64
    assert dataset.num_classes == 10 and dataset.class_names == tuple('0123456789')
    assert dataset.input_shape == (8, 8, 1) and dataset.num_train == 1437
    assert (dataset.mean, dataset.std, dataset.augment) == ((0.5,), (0.5,), 'none')
    # 0..16 maps onto round(k * 255 / 16): 0 stays 0 and 16 becomes 255.
    allowed = np.round(np.arange(17) * 255 / 16)
    assert set(np.unique(dataset.train_images)) <= set(allowed)
    assert dataset.train_images.max() == 255


def test_digits_split_is_fixed_and_stratified():
    first, second = data.load_dataset('digits'), data.load_dataset('digits')
    np.testing.assert_array_equal(first.train_images, second.train_images)
    np.testing.assert_array_equal(first.test_labels, second.test_labels)
    assert first.num_train + len(first.test_labels) == 1797
    # Stratified: each digit is about 10% of the 360 test images (the classes have 174..183).
    assert np.bincount(first.test_labels).min() >= 34


# synthetic.

def test_synthetic_is_deterministic_and_learnable():
    first = data.load_dataset('synthetic', num_train=200, num_test=100, image_shape=(8, 8, 3),
                              num_classes=4, seed=3)
    second = data.load_dataset('synthetic', num_train=200, num_test=100, image_shape=(8, 8, 3),
                               num_classes=4, seed=3)
    np.testing.assert_array_equal(first.train_images, second.train_images)
    assert first.train_images.shape == (200, 8, 8, 3) and first.test_images.shape == (100, 8, 8, 3)
    assert np.bincount(first.train_labels).tolist() == [50] * 4
    # A nearest-class-mean classifier fit on train should do far better than chance (25%) on test.
    train = first.train_images.reshape(200, -1).astype(float)
    means = np.stack([train[first.train_labels == c].mean(0) for c in range(4)])
    test = first.test_images.reshape(100, -1).astype(float)
    predictions = np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predictions == first.test_labels).mean() > 0.9


# subset.

def test_subset_is_seeded_without_replacement_and_keeps_test():
    full = _indexed_dataset()
    picked = data.subset(full, train_examples=50, seed=7)
    chosen = picked.train_images[:, 0, 0, 0]
    assert len(np.unique(chosen)) == 50 and np.all(np.diff(chosen.astype(int)) > 0)
    np.testing.assert_array_equal(picked.train_labels, full.train_labels[chosen])
    np.testing.assert_array_equal(data.subset(full, 50, seed=7).train_images, picked.train_images)
    assert not np.array_equal(data.subset(full, 50, seed=8).train_images, picked.train_images)
    assert picked.test_images is full.test_images and picked.num_train == 50


@pytest.mark.parametrize('name,kwargs', [('digits', {}), ('synthetic', {'num_train': 64})])
def test_loaders_take_train_examples_like_subset(name, kwargs):
    full = data.load_dataset(name, seed=2, **kwargs)
    partial = data.load_dataset(name, train_examples=10, seed=2, **kwargs)
    expected = data.subset(full, train_examples=10, seed=2)
    np.testing.assert_array_equal(partial.train_images, expected.train_images)
    np.testing.assert_array_equal(partial.train_labels, expected.train_labels)
    np.testing.assert_array_equal(partial.test_images, full.test_images)


def test_subset_too_large_names_both_numbers():
    with pytest.raises(data.DataError, match=r'train_examples=201.*\b200\b'):
        data.subset(_indexed_dataset(200), train_examples=201, seed=0)


# folder.

def test_folder_loads_labels_from_sorted_class_names(tmp_path):
    dataset = data.load_dataset('folder', data_dir=_make_folder(tmp_path))
    assert dataset.class_names == ('cat', 'dog', 'eel')
    assert dataset.train_images.shape == (12, *SHAPE) and dataset.test_images.shape == (6, *SHAPE)
    np.testing.assert_array_equal(dataset.train_labels, dataset.train_images[:, 0, 0, 0] // 50)
    np.testing.assert_array_equal(dataset.test_labels, dataset.test_images[:, 0, 0, 0] // 50)
    assert dataset.train_labels.dtype == np.int64
    assert (dataset.mean, dataset.augment) == ((0.5,) * 3, 'flip_crop')


def test_folder_reads_jpeg_and_grayscale(tmp_path):
    root = _make_folder(tmp_path, shape=(6, 6, 1))
    _write_image(os.path.join(root, 'train', 'cat', 'extra.JPEG'), np.full((6, 6, 1), 3, np.uint8))
    dataset = data.load_dataset('folder', data_dir=root)
    assert dataset.num_train == 13 and dataset.input_shape == (6, 6, 1)
    assert (dataset.mean, dataset.std, dataset.augment) == ((0.5,), (0.5,), 'none')


def test_folder_uses_cifar10_constants_for_cifar_like_data(tmp_path):
    root = _make_folder(tmp_path, classes=[f'c{i}' for i in range(10)], train_per_class=1,
                        test_per_class=1, shape=(32, 32, 3))
    dataset = data.load_dataset('folder', data_dir=root)
    assert dataset.mean == (0.4914, 0.4822, 0.4465) and dataset.std == (0.2470, 0.2435, 0.2616)


def test_folder_train_examples_matches_subset(tmp_path):
    root = _make_folder(tmp_path)
    full = data.load_dataset('folder', data_dir=root)
    partial = data.load_dataset('folder', data_dir=root, train_examples=5, seed=4)
    expected = data.subset(full, train_examples=5, seed=4)
    np.testing.assert_array_equal(partial.train_images, expected.train_images)
    np.testing.assert_array_equal(partial.train_labels, expected.train_labels)
    np.testing.assert_array_equal(partial.test_images, full.test_images)


def _remove_dir(path):
    for name in os.listdir(path):
        os.remove(os.path.join(path, name))
    os.rmdir(path)


def _break_missing_test(root):
    for name in os.listdir(os.path.join(root, 'test')):
        _remove_dir(os.path.join(root, 'test', name))
    os.rmdir(os.path.join(root, 'test'))
    return os.path.join(root, 'test')


def _break_no_classes(root):
    for name in os.listdir(os.path.join(root, 'train')):
        _remove_dir(os.path.join(root, 'train', name))
    return os.path.join(root, 'train')


def _break_empty_class(root):
    for split in ('train', 'test'):
        os.makedirs(os.path.join(root, split, 'fox'))
    # A non-image file does not make a class directory non-empty.
    with open(os.path.join(root, 'train', 'fox', 'notes.txt'), 'w') as f:
        f.write('no images here')
    return os.path.join(root, 'train', 'fox')


def _break_test_classes(root):
    os.rename(os.path.join(root, 'test', 'eel'), os.path.join(root, 'test', 'yak'))
    return os.path.join(root, 'test')


def _corrupt(root):
    path = os.path.join(root, 'train', 'dog', 'zz.jpg')  # Not first: decoded in the pipeline.
    with open(path, 'wb') as f:
        f.write(b'not an image')
    return path


def _wrong_shape_train(root):
    path = os.path.join(root, 'train', 'dog', 'odd.png')
    _write_image(path, np.zeros((7, 6, 3), np.uint8))
    return path


def _wrong_shape_test(root):
    path = os.path.join(root, 'test', 'eel', 'odd.png')
    _write_image(path, np.zeros((6, 7, 3), np.uint8))
    return path


@pytest.mark.parametrize('break_folder', [
    _break_missing_test, _break_no_classes, _break_empty_class,
    _break_test_classes, _corrupt, _wrong_shape_train, _wrong_shape_test,
], ids=lambda fn: fn.__name__)
def test_folder_errors_name_the_offending_path(tmp_path, break_folder):
    root = _make_folder(tmp_path)
    offending = break_folder(root)
    with pytest.raises(data.DataError) as error:
        data.load_dataset('folder', data_dir=root)
    assert offending in str(error.value)


def test_folder_corrupt_first_image_names_it(tmp_path):
    # The first training file is checked like any other (the shape comes from a test file).
    root = _make_folder(tmp_path)
    path = os.path.join(root, 'train', 'cat', '0.jpg')  # Sorts before 00.png.
    with open(path, 'wb') as f:
        f.write(b'not an image')
    with pytest.raises(data.DataError, match='cannot decode') as error:
        data.load_dataset('folder', data_dir=root)
    assert path in str(error.value)


def test_folder_wrong_shape_names_both_shapes(tmp_path):
    root = _make_folder(tmp_path)
    _wrong_shape_train(root)
    with pytest.raises(data.DataError, match=r'\(7, 6, 3\).*cat/00.png.*\(6, 6, 3\)'):
        data.load_dataset('folder', data_dir=root)


def test_folder_without_data_dir(tmp_path):
    with pytest.raises(data.DataError, match='data_dir=None'):
        data.load_dataset('folder')
    missing = str(tmp_path / 'nope')
    with pytest.raises(data.DataError, match=missing):
        data.load_dataset('folder', data_dir=missing)



# Unusable image files: found in one pass, named in one error, or skipped with --skip_bad_images.

def _write_bytes(path, content):
    with open(path, 'wb') as f:
        f.write(content)
    return path


def _add_bad_files(root):
    """Three unusable files in train/ and test/, in the loader's listing order."""
    jpeg = tf.io.encode_jpeg(tf.zeros(SHAPE, tf.uint8)).numpy()
    return [_write_bytes(os.path.join(root, 'train', 'cat', 'empty.jpg'), b''),
            _write_bytes(os.path.join(root, 'train', 'dog', 'notes.jpg'), b'a text file'),
            _write_bytes(os.path.join(root, 'test', 'eel', 'cut.jpg'), jpeg[:len(jpeg) // 2])]


def test_folder_names_every_bad_file_in_one_error(tmp_path):
    root = _make_folder(tmp_path)
    bad = _add_bad_files(root)
    # A subset still checks the whole folder: a second run must not find another bad file.
    with pytest.raises(data.DataError) as error:
        data.load_dataset('folder', data_dir=root, train_examples=2)
    message = str(error.value)
    assert '3 of the 21 image files' in message and '(2 train, 1 test)' in message
    assert all(path in message for path in bad) and '--skip_bad_images' in message
    assert 'empty file, 0 bytes' in message and 'Unknown image file format' in message
    assert '\n' not in message  # tfdp.train prints it as one line.


def test_folder_error_names_the_first_five_and_counts_the_rest(tmp_path):
    root = _make_folder(tmp_path)
    bad = [_write_bytes(os.path.join(root, 'train', 'dog', f'bad{i}.png'), b'x') for i in range(7)]
    with pytest.raises(data.DataError, match='7 of the 25 image files') as error:
        data.load_dataset('folder', data_dir=root)
    message = str(error.value)
    assert all(path in message for path in bad[:5]) and bad[5] not in message
    assert 'and 2 more' in message


def test_folder_skip_bad_images_leaves_them_out_and_records_them(tmp_path, capsys):
    root = _make_folder(tmp_path)
    clean = data.load_dataset('folder', data_dir=root)
    _add_bad_files(root)
    dataset = data.load_dataset('folder', data_dir=root, skip_bad_images=True)
    np.testing.assert_array_equal(dataset.train_images, clean.train_images)
    np.testing.assert_array_equal(dataset.test_labels, clean.test_labels)
    report = dataset.skipped_images.report()
    assert (report['train'], report['test']) == (2, 1)
    assert 'examples' not in report  # No private file name in what a run releases.
    assert dataset.skipped_images.names() == ['train/cat/empty.jpg', 'train/dog/notes.jpg',
                                              'test/eel/cut.jpg']
    assert 'NOT covered' in report['not_private']
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith('folder: skipped 3 of the 21 image files')
    # The subset is drawn from the usable files, as subset() of the loaded dataset would.
    partial = data.load_dataset('folder', data_dir=root, train_examples=5, seed=4,
                                skip_bad_images=True)
    expected = data.subset(dataset, train_examples=5, seed=4)
    np.testing.assert_array_equal(partial.train_images, expected.train_images)
    np.testing.assert_array_equal(partial.train_labels, expected.train_labels)


def test_folder_skip_bad_images_on_a_clean_folder_changes_nothing(tmp_path, capsys):
    root = _make_folder(tmp_path)
    plain = data.load_dataset('folder', data_dir=root)
    checked = data.load_dataset('folder', data_dir=root, skip_bad_images=True)
    np.testing.assert_array_equal(checked.train_images, plain.train_images)
    np.testing.assert_array_equal(checked.test_images, plain.test_images)
    assert plain.skipped_images is None
    assert checked.skipped_images.report()['train'] == 0 and not capsys.readouterr().out


def test_folder_skip_bad_images_needs_a_training_image_left(tmp_path):
    root = _make_folder(tmp_path, classes=('cat',), train_per_class=1)
    _write_bytes(os.path.join(root, 'train', 'cat', '00.png'), b'')
    with pytest.raises(data.DataError, match='none of the 1 training images'):
        data.load_dataset('folder', data_dir=root, skip_bad_images=True)


def test_skip_bad_images_is_refused_where_there_are_no_image_files():
    with pytest.raises(data.DataError, match='drop --skip_bad_images'):
        data.load_dataset('digits', skip_bad_images=True)


def test_train_with_bad_images_fails_in_one_line_or_skips_them(tmp_path):
    root = _make_folder(tmp_path / 'images', train_per_class=8)
    _add_bad_files(root)
    command = [sys.executable, '-m', 'tfdp.train', '--dataset=folder', f'--data_dir={root}',
               '--model=linear', '--epochs=1', '--batch_size=8', '--noise_multiplier=1',
               '--noexport', f'--output_dir={tmp_path}/run']
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    failed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    assert failed.returncode != 0 and not os.path.exists(tmp_path / 'run')
    assert 'tfdp.train: error: folder: 3 of the 33 image files' in failed.stderr, failed.stderr
    done = subprocess.run(command + ['--skip_bad_images'], env=env, cwd=cwd, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'folder: skipped 3 of the 33 image files' in done.stdout
    with open(tmp_path / 'run' / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['train_examples'] == 24  # 3 classes of 8; the 2 bad training files left out.
    assert (metrics['skipped_images']['train'], metrics['skipped_images']['test']) == (2, 1)
    assert 'skipped_images' in model_card.build(metrics)['not_covered']

# cifar10 through tensorflow_datasets.

def test_cifar10_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        dataset = data.load_dataset('cifar10', data_dir=str(tmp_path))
        assert data.load_dataset('cifar10', data_dir=str(tmp_path), train_examples=5).num_train == 5
    assert dataset.train_images.shape == (12, 32, 32, 3)
    assert dataset.test_images.shape[1:] == (32, 32, 3)
    assert dataset.train_images.dtype == np.uint8 and dataset.train_labels.dtype == np.int64
    assert dataset.num_classes == 10 and dataset.augment == 'flip_crop'
    assert dataset.mean == (0.4914, 0.4822, 0.4465)


def test_cifar10_missing_suggests_folder(tmp_path):
    with pytest.raises(data.DataError, match='--dataset=folder --data_dir='):
        data.load_dataset('cifar10', data_dir=str(tmp_path), download=False)


def _write_npz(path, train=12, test=6, shape=(5, 5), **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        'train_images': rng.integers(0, 256, (train, *shape)).astype(np.uint8),
        'train_labels': (np.arange(train) % 2).reshape(-1, 1).astype(np.uint8),
        'val_images': rng.integers(0, 256, (3, *shape)).astype(np.uint8),
        'val_labels': np.zeros((3, 1), np.uint8),
        'test_images': rng.integers(0, 256, (test, *shape)).astype(np.uint8),
        'test_labels': (np.arange(test) % 2).reshape(-1, 1).astype(np.uint8),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_npz_reads_the_medmnist_layout(tmp_path):
    path = _write_npz(tmp_path / 'tiny.npz')
    dataset = data.load_dataset('npz', path)
    assert dataset.train_images.shape == (12, 5, 5, 1) and dataset.test_images.shape == (6, 5, 5, 1)
    assert dataset.train_labels.tolist() == [0, 1] * 6 and dataset.class_names == ('0', '1')
    with np.load(path) as arrays:
        np.testing.assert_array_equal(dataset.train_images[..., 0], arrays['train_images'])
    assert data.load_dataset('npz', path, train_examples=5, seed=1).num_train == 5
    colour = data.load_dataset('npz', _write_npz(tmp_path / 'rgb.npz', shape=(4, 4, 3)))
    assert colour.input_shape == (4, 4, 3) and colour.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize('overrides,message', [
    ({'test_labels': None}, 'no test_images/test_labels'),
    ({'train_images': np.zeros((12, 5, 5), np.float32)}, 'must be uint8'),
    ({'train_labels': np.zeros((12, 3), np.uint8)}, 'single-label'),
    ({'train_labels': np.zeros((11, 1), np.uint8)}, '12 images but 11 labels'),
])
def test_npz_errors_name_the_file_and_array(tmp_path, overrides, message):
    path = _write_npz(tmp_path / 'bad.npz', **overrides)
    with pytest.raises(data.DataError, match=message):
        data.load_dataset('npz', path)


def test_npz_missing_or_corrupt_file(tmp_path):
    with pytest.raises(data.DataError, match='path of an .npz file'):
        data.load_dataset('npz', str(tmp_path / 'absent.npz'))
    corrupt = tmp_path / 'corrupt.npz'
    corrupt.write_bytes(b'not a zip file')
    with pytest.raises(data.DataError, match='cannot read'):
        data.load_dataset('npz', str(corrupt))
