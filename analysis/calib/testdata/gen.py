# Regenerates the reference files in this folder with NumPy:
#   cd analysis/calib/testdata && /usr/bin/python3 gen.py
# Values: element with C-order flat index i of a (6, 2, 3) array is
# i*0.25 - 2 (exact in float16/32/64); see refValue in calib_test.go.
import numpy as np

v = (np.arange(36) * 0.25 - 2).reshape(6, 2, 3)
np.save("f4.npy", v.astype("<f4"))
np.save("f8.npy", v.astype("<f8"))
np.save("f2.npy", v.astype("<f2"))
np.save("f4_be.npy", v.astype(">f4"))
np.save("f4_fortran.npy", np.asfortranarray(v.astype("<f4")))
np.save("f8_fortran_2d.npy", np.asfortranarray(v.reshape(6, 6)))
np.save("f4_flat.npy", v.reshape(6, 6).astype("<f4"))
with open("f4_v2.npy", "wb") as f:
    np.lib.format.write_array(f, v.astype("<f4"), version=(2, 0))
np.save("u1.npy", (np.arange(36) * 7 % 256).reshape(6, 2, 3).astype("u1"))
np.save("i8_labels.npy", np.arange(6, dtype="<i8") % 3)
np.save("u1_labels.npy", (np.arange(6) % 3).astype("u1"))
np.save("f4_targets.npy", (np.arange(12) * 0.5).reshape(6, 2).astype("<f4"))
np.savez("multi.npz", a=v.astype("<f4"), b=v.reshape(6, 6).astype("<f8"))
np.savez_compressed("multi_c.npz", a=v.astype("<f4"), b=v.reshape(6, 6).astype("<f8"))
np.savez("one.npz", whatever=v.astype("<f4"))
np.save("i2.npy", np.arange(18, dtype="<i2").reshape(6, 3))
np.save("c8.npy", np.arange(18, dtype="<c8").reshape(6, 3))
np.save("obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
np.save("struct.npy", np.zeros(3, dtype=[("x", "<f4"), ("y", "<i4")]))
n = v.astype("<f4").copy()
n[4, 1, 2] = np.nan
np.save("nan.npy", n)
