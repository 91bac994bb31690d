"""meddx.evaluate"""
