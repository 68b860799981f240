from .download_data import download_cect_data
from .my_transforms import ConcatImages
