"""meddx.data"""
